"""LLM providers behind one small protocol; the engine never sees an SDK type."""
