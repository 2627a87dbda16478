"""trainyard: plan, policy-check, price and review a GPU training platform offline."""

__version__ = "0.1.0"
