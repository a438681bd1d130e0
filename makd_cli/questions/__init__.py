"""Question generation: the papers' prompts, the LLM driver, and validation of what it wrote."""
