"""The ranking web app: FastAPI, server-rendered pages, a little vanilla JS, and a JSON API for scripts."""
