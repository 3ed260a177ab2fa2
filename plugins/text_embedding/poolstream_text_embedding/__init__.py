"""The ``text_embedding`` IO Processor plugin."""


def register() -> str:
    """Entry point: the plugin class's fully qualified name."""
    return "poolstream_text_embedding.processor.TextEmbeddingProcessor"
