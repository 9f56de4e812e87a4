"""Bake the template this directory sits in, once per broker, into a temporary folder."""

import json
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE_DIR = Path(__file__).resolve().parent.parent


class BakeUnavailable(Exception):
    """The template cannot produce what was asked (yet); the reason says why."""


def template_prompts(template: Path) -> dict[str, object]:
    path = template / "cookiecutter.json"
    if not path.exists():
        raise BakeUnavailable(f"no {path.name} in {template}")
    return dict(json.loads(path.read_text()))


def bake(broker: str, output_dir: Path, template: Path = TEMPLATE_DIR) -> Path:
    """Return the baked project's `src` folder (the uvicorn --app-dir)."""
    prompts = template_prompts(template)
    context: dict[str, str] = {}
    if "broker" in prompts:
        context["broker"] = broker
    elif broker != "memory":
        raise BakeUnavailable(f"the template has no `broker` prompt, so no {broker} broker")
    project = Path(
        cookiecutter(
            str(template),
            no_input=True,
            output_dir=str(output_dir / broker),
            extra_context=context,
        )
    )
    src = project / "src"
    # The package is named by the slug prompt; with the defaults it is `sse_demo`.
    if not any(src.glob("*/main.py")):
        raise BakeUnavailable(f"baked project has no src/<package>/main.py under {src}")
    return src


def app_module(src: Path) -> str:
    main = sorted(src.glob("*/main.py"))[0]
    return f"{main.parent.name}.main:app"
