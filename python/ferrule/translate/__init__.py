"""OpenAI <-> Anthropic translation (request side and non-streaming response side)."""
