"""Request size limits at the edge of every service and of the gateway, checked before anything
parses the request: headers over ``max_header_bytes`` get 431, a body over ``max_body_bytes`` 413.

A declared Content-Length over the limit is refused at once, without reading a byte of the body. A
body without one (chunked) is counted as it streams through ``receive`` and cut at the limit: the
rest is never read nor buffered (the 413 closes the connection). The server itself bounds the
request head before this middleware sees it (runner.py).
"""

from __future__ import annotations

from .errors import HEADERS_TOO_LARGE, PAYLOAD_TOO_LARGE, problem_response


class BodyTooLarge(Exception):
    """Raised from ``receive`` when the body passes the limit; the middleware answers 413."""


class RequestLimits:
    def __init__(self, app, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
        if header_bytes > self.max_header_bytes:
            await self._refuse(scope, receive, send, HEADERS_TOO_LARGE(
                f"The request headers take {header_bytes} bytes; the limit is {self.max_header_bytes}."))
            return
        declared = _content_length(scope["headers"])
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(scope, receive, send, self._too_large())
            return

        limit = self.max_body_bytes
        received = 0
        cut = False
        started = False

        async def counted_receive():
            nonlocal received, cut
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if cut:  # whatever the app answers to a body cut short, the client gets the 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            # A framework may wrap BodyTooLarge in an error of its own (FastAPI: a 400).
            if not cut:
                raise
        if cut and not started:
            await self._refuse(scope, receive, send, self._too_large())

    def _too_large(self):
        return PAYLOAD_TOO_LARGE(f"The request body is larger than {self.max_body_bytes} bytes.",
                                 max_bytes=self.max_body_bytes)

    @staticmethod
    async def _refuse(scope, receive, send, problem) -> None:
        await problem_response(problem, scope["path"])(scope, receive, send)


def _content_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed Content-Length before we are called
    return None
