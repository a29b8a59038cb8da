"""A minimal client for an OpenAI-compatible ``/chat/completions`` endpoint (stdlib urllib).

Meant for a local server (vLLM, llama.cpp, Ollama, LM Studio …) standing in for the paper's
InternVideo2 captioner or ChatGPT rewrite (supp. Fig. 6). Every request has a timeout; network
errors, HTTP 429 and 5xx are retried a bounded number of times with exponential backoff; other
HTTP errors fail at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from pvchat.errors import ConfigError, InputError

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


def _short(text: str, n: int = 200) -> str:
    return " ".join(str(text).split())[:n]


@dataclass
class ChatEndpoint:
    """``POST {base_url}/chat/completions``.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name the server expects.
        api_key: sent as a Bearer token when given; else read from the environment variable named
            by ``api_key_env`` when it is set (local servers usually need none).
        timeout: seconds per attempt. retries: extra attempts after the first. backoff: first wait
            in seconds, doubled each retry.
        max_tokens, temperature: generation settings sent with every request.
    """

    base_url: str
    model: str
    api_key: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 60.0
    retries: int = 2
    backoff: float = 0.5
    max_tokens: int = 256
    temperature: float = 0.0

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"endpoint base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.model:
            raise ConfigError("endpoint model name is empty")
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ConfigError("endpoint timeout must be > 0, retries and backoff >= 0")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def chat(self, messages: list[dict[str, Any]]) -> str:
        """The assistant's text for ``messages`` (OpenAI chat format).

        Raises:
            ConfigError: the server rejected the request (4xx other than 408/429).
            InputError: no usable answer after ``1 + retries`` attempts, or a malformed response.
        """
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                           "temperature": self.temperature, "stream": False}).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url, data=body, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = resp.read()
            except urllib.error.HTTPError as e:
                detail = _short(e.read().decode("utf-8", "replace"))
                if e.code not in _RETRY_STATUS:
                    raise ConfigError(f"{self.url} rejected the request: HTTP {e.code} {detail}") from None
                last = f"HTTP {e.code} {detail}"
                continue
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                last = _short(getattr(e, "reason", e))
                continue
            return _parse(payload, self.url)
        raise InputError(f"{self.url} gave no answer after {self.retries + 1} attempts: {last}")


def _parse(payload: bytes, url: str) -> str:
    try:
        data = json.loads(payload.decode("utf-8"))
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise InputError(f"{url} returned a malformed chat completion: {_short(payload.decode('utf-8', 'replace'))}") from None
    if isinstance(content, list):  # content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise InputError(f"{url} returned non-text content")
    return content
