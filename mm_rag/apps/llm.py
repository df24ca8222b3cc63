"""One way to ask a chat model about multimodal context: LangChain chat models, LlamaIndex LLMs, or any
OpenAI-compatible endpoint (base URL + key from arguments or the environment).

The core imports no framework: a LangChain chat model is given plain message dicts and content blocks, which
it takes as they are; a LlamaIndex LLM needs LlamaIndex's own message types, so it is handed to the adapter of
the llama-index-mm-rag integration (`llama_index.tools.mm_rag.chat`), loaded only when such a model is passed.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from mm_rag.context import Context
from mm_rag.errors import InvalidInputError, MMRagError

ENV_BASE_URL = "MM_RAG_LLM_BASE_URL"
ENV_API_KEY = "MM_RAG_LLM_API_KEY"
ENV_MODEL = "MM_RAG_LLM_MODEL"
OPENAI_BASE_URL = "https://api.openai.com/v1"
# A sensible default for api.openai.com only; other endpoints must name their model.
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"


class LLMNotConfiguredError(MMRagError):
    """No language model was given and none is configured in the environment."""


class LLMError(MMRagError):
    """The language model endpoint failed or answered with something that is not a chat completion."""


@dataclass(frozen=True)
class OpenAIChat:
    """An OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM…).

    Attributes:
        base_url: The API root, e.g. ``"http://localhost:8000/v1"``; ``/chat/completions`` is appended.
        model: The model name the endpoint serves.
        api_key: Sent as a bearer token when given.
        timeout: Seconds to wait for an answer.
        max_tokens: Cap on the answer's length.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 120.0
    max_tokens: int = 512

    @classmethod
    def from_env(cls) -> OpenAIChat:
        """The endpoint named by ``MM_RAG_LLM_BASE_URL``/``MM_RAG_LLM_MODEL``/``MM_RAG_LLM_API_KEY`` (or, with
        only ``OPENAI_API_KEY`` set, api.openai.com).

        Raises:
            LLMNotConfiguredError: nothing is configured, or an endpoint without a model name.
        """
        base_url = os.environ.get(ENV_BASE_URL)
        api_key = os.environ.get(ENV_API_KEY) or os.environ.get("OPENAI_API_KEY")
        model = os.environ.get(ENV_MODEL)
        if not base_url and not api_key:
            # One message for both doors: the command line (options) and Python (the llm argument).
            raise LLMNotConfiguredError(
                "no language model configured: name an OpenAI-compatible endpoint with --llm-base-url URL and"
                f" --llm-model NAME (and --llm-api-key KEY), or set {ENV_BASE_URL} and {ENV_MODEL} (and {ENV_API_KEY};"
                " OPENAI_API_KEY alone means api.openai.com); from Python, pass llm= a LangChain chat model, a"
                " LlamaIndex LLM or an OpenAIChat"
            )
        if not model and base_url:
            raise LLMNotConfiguredError(
                f"{ENV_BASE_URL} is set but {ENV_MODEL} is not: set it (or pass --llm-model) to name the model to use"
            )
        return cls(base_url or OPENAI_BASE_URL, model or OPENAI_DEFAULT_MODEL, api_key)

    def chat(self, system: str, content: list[dict[str, Any]]) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
            "max_tokens": self.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode(errors="replace")
            raise LLMError(f"{url} answered HTTP {error.code}: {detail}") from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise LLMError(f"cannot reach {url}: {getattr(error, 'reason', error)}") from error
        except ValueError as error:
            raise LLMError(f"{url} did not answer JSON: {error}") from error
        try:
            return str(answer["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as error:
            raise LLMError(f"{url} answered without choices[0].message.content: {str(answer)[:300]}") from error


def complete(llm: Any, system: str, context: Context, request: str) -> str:
    """Ask `llm` (None: `OpenAIChat.from_env()`) to carry out `request` on `context`; returns its text answer.

    The context's images travel as image content blocks (each framework's own, for LlamaIndex), so a multimodal
    model sees them.

    Raises:
        LLMNotConfiguredError: `llm` is None and nothing is configured.
        InvalidInputError: `llm` is of a kind this function does not know.
    """
    if llm is None:
        llm = OpenAIChat.from_env()
    if isinstance(llm, OpenAIChat):
        return llm.chat(system, [*context.to_openai(), {"type": "text", "text": request}])
    content = [*context.to_blocks(), {"type": "text", "text": request}]
    if _comes_from(llm, "langchain_core"):
        # Message dicts and standard content blocks: what LangChain chat models accept without its classes.
        reply = llm.invoke([{"role": "system", "content": system}, {"role": "user", "content": content}])
        return str(reply.text)
    if _comes_from(llm, "llama_index.core"):
        return _integration(LLAMA_INDEX_ADAPTER, "llama-index-mm-rag", "integrations/llama_index").chat(
            llm, system, content
        )
    raise InvalidInputError(
        f"unsupported llm {type(llm).__name__}: pass a LangChain chat model, a LlamaIndex LLM or an OpenAIChat"
    )


# The integration module that speaks to LlamaIndex LLMs in their own types (see the module docstring).
LLAMA_INDEX_ADAPTER = "llama_index.tools.mm_rag"


def _integration(module: str, distribution: str, folder: str) -> Any:
    """The integration `module`, or an error naming the package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise InvalidInputError(
            f"a LlamaIndex LLM is spoken to through the {distribution} integration, which cannot be imported"
            f" ({error}): install it (pip install -e {folder}), or pass an OpenAIChat"
        ) from error


def _comes_from(obj: Any, package: str) -> bool:
    """Whether `obj`'s class derives from a class defined in `package` (without importing it)."""
    return any(cls.__module__ == package or cls.__module__.startswith(package + ".") for cls in type(obj).__mro__)
