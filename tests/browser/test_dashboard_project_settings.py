"""The dashboard's project forms set where a project's spawned sessions work, in a real Chromium
against a real server: isolation (worktree / none) and base ref when creating a project, both
changed with its name in the edit form, shown under the project's name, and a ref the server
refuses shown in its own words with nothing changed."""

from __future__ import annotations

import re

from helpers import ok, wait_until
from playwright.sync_api import expect
from test_dashboard import HTTP_STATUS, api, browser, dashboard  # noqa: F401


def test_project_forms_set_isolation_and_base_ref(server, api, dashboard):
    dash = dashboard(server)
    page = dash.open()

    create = page.locator("#project-create")
    create.get_by_label("Name").fill("Shop")
    create.get_by_label("Working directory").fill("/srv/shop")
    create.get_by_label("Isolation").select_option("none")
    create.get_by_label("Base ref").fill("develop")
    create.get_by_role("button", name="Create project").click()
    expect(page.locator("#project-name")).to_have_text("Shop")
    project = wait_until(lambda: ok(api.get("/api/projects")), what="project stored")[0]
    assert (project["isolation"], project["baseRef"]) == ("none", "develop")
    meta = page.locator("#project-meta")
    expect(meta).to_have_text("/srv/shop — sessions work in the directory itself")

    # The edit form opens with the stored settings and saves them with the name.
    page.get_by_role("button", name="Rename / settings").click()
    edit = page.locator("#project-rename-form")
    expect(edit.get_by_label("Isolation")).to_have_value("none")
    expect(edit.get_by_label("Base ref")).to_have_value("develop")
    edit.get_by_label("Project name").fill("Shop 2")
    edit.get_by_label("Isolation").select_option("worktree")
    edit.get_by_label("Base ref").fill("release")
    dash.screenshot("project-settings")
    edit.get_by_role("button", name="Save").click()
    expect(edit).to_be_hidden()
    expect(meta).to_have_text("/srv/shop — sessions branch from release")
    stored = wait_until(lambda: (p := ok(api.get(f"/api/projects/{project['id']}")))[
        "name"] == "Shop 2" and p, what="settings stored")
    assert (stored["name"], stored["isolation"], stored["baseRef"]) == ("Shop 2", "worktree",
                                                                        "release")

    # An empty base ref goes back to the checkout's branch; a bad one is refused as is.
    page.get_by_role("button", name="Rename / settings").click()
    edit.get_by_label("Base ref").fill("")
    edit.get_by_role("button", name="Save").click()
    expect(meta).to_have_text("/srv/shop")
    before = wait_until(lambda: (p := ok(api.get(f"/api/projects/{project['id']}")))[
        "baseRef"] == "" and p, what="base ref cleared")
    dash.allow(HTTP_STATUS.format(400))
    page.get_by_role("button", name="Rename / settings").click()
    edit.get_by_label("Base ref").fill("two words")
    edit.get_by_role("button", name="Save").click()
    expect(page.locator("#project-error")).to_have_text(re.compile(r"baseRef must be a branch"))
    assert ok(api.get(f"/api/projects/{project['id']}")) == before
    dash.check_clean()
