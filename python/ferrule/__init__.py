"""Ferrule: an OpenAI-compatible, Rust-accelerated proxy in front of Anthropic's Messages API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ferrule")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
