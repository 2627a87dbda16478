"""GPT-style LLM pretraining (``python -m workloads.llm.train``); see train.py's docstring."""
