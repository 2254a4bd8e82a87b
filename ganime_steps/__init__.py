"""ganime: booru tag query -> cleaned anime-character datasets -> trained GANs.

Each stage is a module with ``run(*, ...) -> Summary`` and ``main(argv) -> int``.
"""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/ganime/ganime"
USER_AGENT = f"ganime/{__version__} (+{PROJECT_URL})"
