"""unredact: audit, remove and verify Chinese-state political censorship in LLMs."""

__version__ = "0.1.0"
