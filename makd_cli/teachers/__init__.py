"""Teachers: language models (llama.cpp, transformers, OpenAI-compatible HTTP), multimodal models
and CLIP, one backend per file. ``load_llm(spec)`` picks the language-model backend from the spec."""
