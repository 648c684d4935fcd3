"""The answer layer: how an answer is made (``engine``: plan, generate, finish), what the model is shown of each source
(``passages``) and conversations (``conversation``: follow-ups made standalone, the chat engine)."""
