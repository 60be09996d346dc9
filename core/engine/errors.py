"""Errors the engine raises to its callers.

Three kinds, by whose fault and what survives:

- :class:`RequestRejectedError` (and :class:`TokenIdError`): the request is invalid; it never
  runs. A ``ValueError``, so the server answers 400.
- :class:`RequestFailedError`: the request was accepted but handling its row failed (sampler,
  detokenizer, grammar matcher, reasoning gate, a hook); that request alone ends, the engine
  goes on serving the others.
- :class:`EngineDeadError`: the engine loop itself stopped (e.g. the model's forward failed);
  no request can be served until the process restarts.

All of them pickle (the engine process hands them to the HTTP front-end as they are).
"""

from __future__ import annotations

__all__ = ("EngineBusyError", "EngineDeadError", "RequestFailedError", "RequestRejectedError", "TokenIdError")


class RequestRejectedError(ValueError):
    """The engine refused a request (bad prompt, parameters or constraint); the request's fault."""


class TokenIdError(RequestRejectedError):
    """A request-supplied token id is outside the vocabulary (or negative).

    Attributes:
        param: the sampling field that holds it: ``"allowed_token_ids"``, ``"stop_token_ids"``,
            ``"logit_bias"``, ``"bad_words"`` or ``"prompt_token_ids"``.
        token_id: the offending id.
    """

    def __init__(self, param: str, token_id: int, vocab_size: int) -> None:
        super().__init__(f"{param} contains {token_id}, which is out of vocabulary: the vocabulary has {vocab_size} "
                         f"tokens (ids 0 to {vocab_size - 1}).")
        self.param = param
        self.token_id = token_id
        self.vocab_size = vocab_size

    def __reduce__(self) -> tuple:
        # pickled with the constructor's arguments (not ``args``, the message), so the error crosses
        # a process boundary (the engine process) as the same class with the same message
        return type(self), (self.param, self.token_id, self.vocab_size)


class RequestFailedError(RuntimeError):
    """Handling one request failed inside the engine; that request ended, the others go on."""


class EngineDeadError(RuntimeError):
    """The engine loop stopped after an error; no request can be served."""


class EngineBusyError(RuntimeError):
    """The engine already holds as many open requests as it was told to accept; retry later."""
