"""Everything that talks to a language model: client, prompts, answer validation."""
