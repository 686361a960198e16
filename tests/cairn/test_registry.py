from types import SimpleNamespace

import cairn.registry
from cairn.registry import Registry


def test_plugins_from_the_entry_point_group_join_the_builtins(monkeypatch) -> None:
    seen_groups = []

    def fake_entry_points(group):
        seen_groups.append(group)
        return [SimpleNamespace(name="plugin", load=lambda: "from a plugin")]

    monkeypatch.setattr(cairn.registry, "entry_points", fake_entry_points)
    registry: Registry[str] = Registry("cairn.things")
    registry.register("builtin", "built in")

    assert registry.names() == ["builtin", "plugin"]
    assert registry.get("plugin") == "from a plugin" and registry.get("missing") is None
    registry.names()
    assert seen_groups == ["cairn.things"]  # plugins load once
