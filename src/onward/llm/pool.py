"""One provider (and so one HTTP connection pool) per configured model, closed at shutdown."""

from __future__ import annotations

from onward.config import Settings
from onward.llm.base import Provider
from onward.llm.openai_compat import OpenAICompatProvider


class ProviderPool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._providers: dict[str, tuple[OpenAICompatProvider, str]] = {}

    def __call__(self, name: str | None) -> tuple[Provider, str]:
        """The provider and model id for a run's model name (None: the default model)."""
        key, cfg = self.settings.resolve_model(name)
        if key not in self._providers:
            self._providers[key] = (OpenAICompatProvider.from_settings(self.settings, cfg), cfg.model)
        return self._providers[key]

    async def aclose(self) -> None:
        for provider, _ in self._providers.values():
            await provider.aclose()
        self._providers.clear()
