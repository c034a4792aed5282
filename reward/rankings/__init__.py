"""The ranking product: sampling K completions, the store, the web app, export, agreement, scripted annotators."""
