"""Security headers on every response, and the only files of examples/ the app serves."""

from __future__ import annotations

from iqa.app.config import EXAMPLES


class SecurityHeaders:
    """ASGI middleware adding security headers to every HTTP response: no framing by other origins
    (on Hugging Face Spaces the Space page on huggingface.co may frame it) and no MIME sniffing."""

    def __init__(self, app, on_spaces: bool = False):
        self.app = app
        ancestors = "'self' https://huggingface.co" if on_spaces else "'self'"
        self.headers = [
            (b"content-security-policy", f"frame-ancestors {ancestors}".encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if not on_spaces:  # X-Frame-Options cannot name another origin
            self.headers.append((b"x-frame-options", b"SAMEORIGIN"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                ours = {name for name, _ in self.headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in ours]
                message = {**message, "headers": kept + self.headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def example_files() -> list[str]:
    """The bundled photos, one by one: the app serves these and not the folder's scripts or CSV."""
    return sorted(str(path) for path in EXAMPLES.glob("*.jpg"))
