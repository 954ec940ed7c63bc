"""What `faasd-py new` scaffolds, and the template folder that faas-cli reads next to stack.yml.

faas-cli (`deploy -f stack.yml`, `up`) reads ./template/<lang>/template.yml for each function of
the stack, unless given --read-template=false, and stops when the file is missing. Of its fields
(language, fprocess, build_options, welcome_message, handler_folder), `deploy` uses `fprocess`:
it becomes the function's envProcess when the stack sets none. faasd-py builds functions itself
(no Dockerfile, no index.py), so the template folder it writes holds only that file.
"""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable
from pathlib import Path

from faasd_py.spec import SUPPORTED_LANGS

TEMPLATE_DIR = "template"
TEMPLATE_FILE = "template.yml"
# The process that runs a faasd-py function: what instances see as $fprocess, as a function in
# an OpenFaaS container sees its watchdog's command.
FPROCESS = "python3 -m faasd_py.runtime"
# A scaffold's files live in faasd_py/templates/<lang>/function/.
_SCAFFOLD_DIR = "function"


def _templates() -> Traversable:
    return importlib.resources.files("faasd_py") / "templates"


def scaffold_langs() -> list[str]:
    """The languages `faasd-py new` can scaffold a function in."""
    return sorted(
        entry.name
        for entry in _templates().iterdir()
        if entry.is_dir() and (entry / _SCAFFOLD_DIR).is_dir()
    )


def copy_scaffold(lang: str, target: Path) -> None:
    """A new function folder `target` with the scaffold of `lang` (handler.py and the rest)."""
    source = _templates() / lang / _SCAFFOLD_DIR
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file() and not item.name.endswith(".pyc"):
            (target / item.name).write_bytes(item.read_bytes())


def template_path(stack_dir: Path, lang: str) -> Path:
    """Where faas-cli looks for `lang`'s template.yml when run in `stack_dir`."""
    return stack_dir / TEMPLATE_DIR / lang / TEMPLATE_FILE


def template_yml(lang: str) -> str:
    """The template.yml faasd-py writes for `lang`: the fields faas-cli reads, for faasd-py."""
    if lang not in SUPPORTED_LANGS:
        raise ValueError(f"no template for {lang!r}; expected one of {', '.join(SUPPORTED_LANGS)}")
    return (
        "# Written by faasd-py for faas-cli, which reads this file on `faas-cli deploy -f\n"
        "# stack.yml`. faasd-py runs handler.py itself: build with `faasd-py build`, not\n"
        "# `faas-cli build`, which would need the template's Dockerfile.\n"
        f"language: {lang}\n"
        f"fprocess: {FPROCESS}\n"
        "build_options: []\n"
        "welcome_message: |\n"
        f"  You have created a {lang} function for faasd-py. Write handle(event, context) in\n"
        "  handler.py and list its packages in requirements.txt, then run:\n"
        "    faasd-py build -f stack.yml && faasd-py deploy -f stack.yml\n"
        "  (faas-cli deploy -f stack.yml works too, after faasd-py build).\n"
    )


def ensure_templates(stack_dir: Path, langs: set[str]) -> list[Path]:
    """Write template/<lang>/template.yml under `stack_dir` for each of `langs` that has none
    (a template pulled with `faas-cli template pull` is kept); the files written."""
    written = []
    for lang in sorted(langs):
        path = template_path(stack_dir, lang)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template_yml(lang))
        written.append(path)
    return written
