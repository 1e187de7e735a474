"""The skill catalogue (SPEC §11 E4): every sub-folder of SKILLS_DIR holding a `manifest.json`
is a skill, named by its folder, with optional instructions in `skill.md`. Read-only; a folder
that cannot be read is left out rather than failing the list."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import jsonio
from .errors import not_found, validation
from .ids import is_safe_file_component

log = logging.getLogger("maestro.skills")

ROLE_SKILLS = {"worker": ("maestro-cli", "maestro-worker"),
               "orchestrator": ("maestro-cli", "maestro-orchestrator")}
MAX_FILE = 1024 * 1024


class SkillCatalogue:
    def __init__(self, skills_dir: Path):
        self.root = Path(skills_dir)
        self._cache: dict[str, dict] = {}

    def _read(self, skill_id: str) -> dict | None:
        """The skill with its instructions, or None if the folder is not a readable skill."""
        if not is_safe_file_component(skill_id) or skill_id.startswith("."):
            return None
        folder = self.root / skill_id
        try:
            with open(folder / "manifest.json", "rb") as f:
                manifest = jsonio.loads(f.read(MAX_FILE))
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict):
            return None
        try:
            with open(folder / "skill.md", encoding="utf-8", errors="replace") as f:
                instructions = f.read(MAX_FILE)
        except OSError:
            instructions = ""

        def text(key: str, default: str) -> str:
            value = manifest.get(key)
            return value if isinstance(value, str) and value else default

        return {"id": skill_id, "name": text("name", skill_id),
                "description": text("description", ""), "type": text("type", "system"),
                "version": text("version", "1.0.0"), "instructions": instructions}

    def _get(self, skill_id: str) -> dict | None:
        # Only skills found are kept (as many as the folder holds): anyone may ask for any
        # id, so a miss is read again next time rather than remembered, and a skill added
        # later shows without a reload.
        skill = self._cache.get(skill_id)
        if skill is None:
            skill = self._read(skill_id)
            if skill is not None:
                self._cache[skill_id] = skill
        return skill

    def list(self) -> list[dict]:
        """Every skill, sorted by id, without instructions; [] when the folder is unusable."""
        try:
            names = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        except OSError:
            return []
        out = []
        for name in names:
            skill = self._get(name)
            if skill is not None:
                out.append({k: v for k, v in skill.items() if k != "instructions"})
        return out

    def get(self, skill_id: str) -> dict:
        skill = self._get(skill_id)
        if skill is None:
            raise not_found("NOT_FOUND", f"Skill not found: {skill_id}", {"skillId": skill_id})
        return skill

    def for_role(self, role: str) -> list[dict]:
        if role not in ROLE_SKILLS:
            raise validation('role must be "worker" or "orchestrator"', {"role": role})
        return [s for s in (self._get(name) for name in ROLE_SKILLS[role]) if s is not None]

    def reload(self, skill_id: str) -> dict:
        self._cache.pop(skill_id, None)
        return {**self.get(skill_id), "reloaded": True}
