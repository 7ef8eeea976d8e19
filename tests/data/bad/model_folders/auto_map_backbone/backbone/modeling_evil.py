"""Remote code a backbone folder ships: transformers imports it for `auto_map` when trusted. Never run it."""
from pathlib import Path

Path("pwned.txt").write_text("modeling_evil ran")
