"""A scripted annotator: ranks tasks through the real server's JSON API (what the end-to-end demo uses).

It logs in over HTTP, leases tasks, orders the completions by a Python scoring function with
Plackett-Luce noise (the K-way Bradley-Terry model: P(i first) = softmax(score / temperature)), and
submits with an idempotency key, retrying transport errors and 5xx with the same key so a submit
that committed but lost its reply is never doubled.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Callable

import httpx

from alignment.common.errors import UserError

ScoreFn = Callable[[str, str], float]
"""score(prompt, completion) -> float, higher = better (alignment/common/functions.py)."""


def plackett_luce_ranks(scores: list[float], temperature: float, rng: random.Random) -> list[int]:
    """Ranks (1 = best) of one Plackett-Luce sample; temperature 0 is the noiseless order (ties by position).

    Gumbel-max trick: sorting score/T + Gumbel(0, 1) noise draws an order with probability
    prod_k softmax over the remaining items, exactly Plackett-Luce; for K = 2 it is Bradley-Terry.
    """
    k = len(scores)
    if temperature <= 0:
        keys = [float(s) for s in scores]
    else:
        keys = [s / temperature - math.log(-math.log(rng.random() or 1e-300)) for s in scores]
    order = sorted(range(k), key=lambda i: (-keys[i], i))
    ranks = [0] * k
    for place, i in enumerate(order):
        ranks[i] = place + 1
    return ranks


def prompt_as_text(prompt) -> str:
    """What a score function gets as `prompt`: text as is; a chat prompt (the server has no tokenizer to apply the
    model's chat template) as its messages' contents, separated by blank lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(m.get("content", "")) for m in prompt)


class ScriptedAnnotator:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        score: ScoreFn,
        temperature: float = 1.0,
        seed: int = 0,
        timeout: float = 30.0,
        retries: int = 8,
        careless: bool = False,
        owns: Callable[[int], bool] | None = None,
    ):
        self.username, self.password = username, password
        self.score, self.temperature = score, temperature
        self.seed = seed
        self.careless = careless
        """Rank at random, whatever the score says (a careless annotator, for agreement and reliability checks)."""
        self.owns = owns
        """Which task ids this annotator ranks (None: any); it skips the others, so a pool whose annotators differ
        still gives every task to the same annotator whichever thread leases it first."""
        self.retries = retries
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self.token: str | None = None
        self.acknowledged: list[dict] = []
        """Every submit the server confirmed (after its commit): {"ranking_id", "task_id", "ranks", ...}."""

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, json: dict | None = None) -> httpx.Response:
        """POST, retrying transport errors and 5xx answers (safe: every write here is idempotent)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        for attempt in range(self.retries + 1):
            try:
                resp = self.http.post(path, json=json or {}, headers=headers)
                if resp.status_code < 500:
                    return resp
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            time.sleep(min(2.0, 0.05 * 2**attempt))
        return resp

    def login(self) -> None:
        resp = self._post("/api/login", {"username": self.username, "password": self.password})
        resp.raise_for_status()
        self.token = resp.json()["token"]

    def next_task(self) -> dict | None:
        return self._next()["task"]

    def _next(self) -> dict:
        resp = self._post("/api/tasks/next")
        resp.raise_for_status()
        return resp.json()

    def rank(self, task: dict) -> list[int]:
        """Ranks aligned to completion positions, as the submit API expects."""
        by_pos = sorted(task["completions"], key=lambda c: c["position"])
        # Noise drawn from (seed, task), not from a stream: which annotator of a pool with one seed
        # draws a task depends on thread timing, and the ranks (hence the whole run) must not.
        rng = random.Random(f"{self.seed}:{task['task_id']}")
        if self.careless:
            order = rng.sample(range(len(by_pos)), len(by_pos))
            return [order.index(i) + 1 for i in range(len(by_pos))]
        prompt = prompt_as_text(task["prompt"])
        scores = [float(self.score(prompt, c["text"])) for c in by_pos]
        return plackett_luce_ranks(scores, self.temperature, rng)

    def submit(self, task_id: int, ranks: list[int], key: str | None = None) -> httpx.Response:
        key = key or uuid.uuid4().hex
        resp = self._post(f"/api/tasks/{task_id}/submit", {"ranks": ranks, "idempotency_key": key})
        if resp.status_code == 200 and resp.json().get("saved"):
            self.acknowledged.append({**resp.json(), "idempotency_key": key})
        return resp

    def release(self, task_id: int) -> None:
        """Give a leased task back (not a skip: it may come back to this annotator), so a failure leaves none held."""
        self._post(f"/api/tasks/{task_id}/release")

    def run(
        self,
        max_tasks: int | None = None,
        poll_seconds: float = 0.2,
        max_idle_seconds: float = 3600,
        stop: threading.Event | None = None,
    ) -> int:
        """Rank until the server has nothing left for this annotator (or max_tasks, or `stop` is set); returns
        rankings saved. If scoring or submitting a task fails, the task is released before the error propagates.

        "Nothing free right now" is not "done": a task another annotator holds comes back when they
        submit (if it still needs rankings) or their lease expires, so wait while `available` > 0.
        """
        if self.token is None:
            self.login()
        saved = 0
        idle_since = None
        while (max_tasks is None or saved < max_tasks) and not (stop is not None and stop.is_set()):
            reply = self._next()
            task = reply["task"]
            if task is None:
                if reply["progress"]["available"] == 0:
                    break
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > max_idle_seconds:
                    break
                time.sleep(poll_seconds)
                continue
            idle_since = None
            if self.owns is not None and not self.owns(task["task_id"]):
                self._post(f"/api/tasks/{task['task_id']}/skip").raise_for_status()
                continue
            saved += self._rank_and_submit(task)
        return saved

    def _rank_and_submit(self, task: dict) -> int:
        """1 when the ranking was saved, 0 when the task went to someone else; on any failure the lease goes back."""
        try:
            resp = self.submit(task["task_id"], self.rank(task))
            if resp.status_code != 409:
                # 409 (lease lost, task complete) is the normal race of many annotators; anything else is a bug.
                resp.raise_for_status()
        except BaseException:
            try:
                self.release(task["task_id"])
            except httpx.HTTPError:
                pass  # the lease expires on its own; the original error is what the user needs to see
            raise
        return int(resp.status_code == 200)


def rank_in_parallel(bots: list[ScriptedAnnotator], max_tasks: int | None = None) -> list[int]:
    """Each annotator ranks in its own thread until nothing is left; returns rankings saved per annotator.

    The first failure (the score function raising, the server refusing) stops the others after their current task,
    every lease is given back, and it is raised as one line (UserError) once all threads have ended: never a
    traceback per thread, never a run that "succeeds" with the tasks still leased.
    """
    stop = threading.Event()
    errors: list[str] = []
    saved = [0] * len(bots)

    def work(i: int) -> None:
        try:
            saved[i] = bots[i].run(max_tasks=max_tasks, stop=stop)
        except Exception as e:  # reported below, once, as one line
            errors.append(f"annotator '{bots[i].username}': {_one_line(e)}")
            stop.set()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(bots))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise UserError(f"{errors[0]} (tasks released; nothing else was ranked after it)")
    return saved


def _one_line(e: Exception) -> str:
    if isinstance(e, UserError):  # already says which key and function
        return str(e)
    if isinstance(e, httpx.HTTPError):
        return http_error_line(e)
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_scripted(cfg) -> dict:
    """`rlhf rank annotate`: the AnnotateConfig's scripted annotators rank in parallel until nothing is left.

    Through `cfg.url`, or through a server started for the run from the store (a free loopback port).
    A wrong password, an unknown account or an unreachable server is one line (UserError).
    """
    import os

    from alignment.common.functions import load_item_function

    score = load_item_function(cfg.score, "score")
    password = cfg.password or os.environ.get("RLHF_RANK_PASSWORD")
    if not password:
        raise UserError("the annotators' password: give password=... or set $RLHF_RANK_PASSWORD")
    if cfg.create_users:
        _create_missing(cfg, password)
    server = None
    if not cfg.url:
        from reward.rankings.app.process import RankServer, ServerFailed

        try:
            server = RankServer(store=cfg.store, annotators_per_task=cfg.annotators_per_task, log_level="warning")
            server.start()
        except ServerFailed as e:  # the server's own line: a missing or unreachable store, a bad setting
            raise UserError(str(e)) from None
    url = cfg.url or server.url
    bots = [
        ScriptedAnnotator(url, name, password, score, cfg.temperature, seed=cfg.seed + i)
        for i, name in enumerate(cfg.users)
    ]
    started = time.monotonic()
    try:
        for bot in bots:
            _login(bot, url)
        rank_in_parallel(bots, cfg.max_tasks)
    finally:
        for bot in bots:
            bot.close()
        if server is not None:
            server.stop()
    counts = {bot.username: len(bot.acknowledged) for bot in bots}
    return {
        "per_annotator": counts,
        "rankings": sum(counts.values()),
        "seconds": time.monotonic() - started,
        "url": url,
    }


def _create_missing(cfg, password: str) -> None:
    from reward.rankings.store import open_store

    store = open_store(cfg.store, create=False)
    try:
        have = {u["name"] for u in store.list_users()}
        for name in cfg.users:
            if name not in have:
                store.add_user(name, "annotator", password)
    finally:
        store.close()


def _login(bot: ScriptedAnnotator, url: str) -> None:
    try:
        bot.login()
    except httpx.HTTPError as e:
        raise UserError(f"user '{bot.username}' cannot log in at {url}: {http_error_line(e)}") from None


def http_error_line(e: httpx.HTTPError) -> str:
    """One line for a failed request: the server's own `detail` (or the first line of its answer) with the status,
    or why the server could not be reached."""
    if isinstance(e, httpx.HTTPStatusError):
        r = e.response
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = None
        said = " ".join(str(detail or r.text or r.reason_phrase).split())[:300]
        return f"HTTP {r.status_code}: {said}"
    reason = " ".join(str(e).split())[:200] or e.__class__.__name__
    return f"cannot reach the ranking server ({e.__class__.__name__}: {reason})"
