"""Extension E4 through the real server: the skill catalogue read from SKILLS_DIR."""

from __future__ import annotations

import json

import httpx
import pytest


def write_skill(root, name, manifest, instructions=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest) if isinstance(manifest, dict)
                                          else manifest)
    if instructions is not None:
        (folder / "skill.md").write_text(instructions)


@pytest.fixture
def skills_server(make_server, tmp_path):
    root = tmp_path / "skills"
    write_skill(root, "maestro-worker", {"name": "Maestro Worker", "version": "2.1.0",
                                         "description": "Works on tasks", "type": "role"},
                "# Worker\nReport with `maestro report`.")
    write_skill(root, "maestro-cli", {"description": "The CLI"})
    write_skill(root, "broken", "{not json")
    (root / "no-manifest").mkdir()
    (root / "stray-file.txt").write_text("x")
    srv = make_server(env={"SKILLS_DIR": str(root)})
    with httpx.Client(base_url=srv.url) as api:
        yield srv, api, root


def test_list_get_role_and_reload(skills_server):
    srv, api, root = skills_server
    listed = api.get("/api/skills").json()
    assert listed == [
        {"id": "maestro-cli", "name": "maestro-cli", "description": "The CLI",
         "type": "system", "version": "1.0.0"},
        {"id": "maestro-worker", "name": "Maestro Worker", "description": "Works on tasks",
         "type": "role", "version": "2.1.0"}]
    one = api.get("/api/skills/maestro-worker").json()
    assert one["instructions"].startswith("# Worker")
    assert api.get("/api/skills/maestro-cli").json()["instructions"] == ""
    r = api.get("/api/skills/broken")
    assert r.status_code == 404
    assert r.json() == {"error": True, "code": "NOT_FOUND", "message": "Skill not found: broken",
                        "details": {"skillId": "broken"}}
    assert [s["id"] for s in api.get("/api/skills/role/worker").json()] == \
        ["maestro-cli", "maestro-worker"]
    assert [s["id"] for s in api.get("/api/skills/role/orchestrator").json()] == ["maestro-cli"]
    bad = api.get("/api/skills/role/admin")
    assert bad.status_code == 400 and bad.json()["code"] == "VALIDATION_ERROR"
    # A changed manifest shows after a reload.
    (root / "maestro-cli" / "manifest.json").write_text(json.dumps({"name": "CLI v2"}))
    assert api.get("/api/skills/maestro-cli").json()["name"] == "maestro-cli"
    reloaded = api.post("/api/skills/maestro-cli/reload").json()
    assert reloaded["name"] == "CLI v2" and reloaded["reloaded"] is True
    assert api.post("/api/skills/nope/reload").status_code == 404


def test_hostile_skill_ids_stay_inside_the_folder(skills_server):
    srv, api, root = skills_server
    (root.parent / "outside").mkdir()
    (root.parent / "outside" / "manifest.json").write_text(json.dumps({"name": "secret"}))
    for bad in ("..%2Foutside", "%2E%2E", "..", "%00"):
        r = api.get(f"/api/skills/{bad}")
        assert r.status_code == 404, bad
        assert "secret" not in r.text


def test_a_missing_skills_folder_is_an_empty_catalogue(make_server, tmp_path):
    srv = make_server(env={"SKILLS_DIR": str(tmp_path / "none")})
    assert httpx.get(srv.url + "/api/skills").json() == []
    assert httpx.get(srv.url + "/api/skills/role/worker").json() == []


def test_unknown_skill_ids_are_not_remembered(tmp_path):
    """Anyone may ask for any id: misses leave nothing behind, only real skills are kept."""
    from maestro.errors import ApiError
    from maestro.skills import SkillCatalogue

    root = tmp_path / "skills"
    write_skill(root, "maestro-cli", {"description": "The CLI"})
    catalogue = SkillCatalogue(root)
    for i in range(5000):
        with pytest.raises(ApiError):
            catalogue.get(f"unknown-{i}")
    assert catalogue.for_role("worker")[0]["id"] == "maestro-cli"
    assert set(catalogue._cache) == {"maestro-cli"}
    # A skill added after a miss is found without a reload.
    write_skill(root, "late", {"name": "Late"})
    assert catalogue.get("late")["name"] == "Late"


def test_many_unknown_skill_ids_on_the_live_server(skills_server):
    srv, api, root = skills_server
    for i in range(300):
        r = api.get(f"/api/skills/missing-{i}")
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    write_skill(root, "missing-7", {"name": "Now here"})
    assert api.get("/api/skills/missing-7").json()["name"] == "Now here"
    assert api.get("/api/skills/maestro-worker").status_code == 200
