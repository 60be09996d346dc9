"""Untrusted adapter paths stay inside the allowed directories: '..', outside paths and symlink escapes fail."""

from __future__ import annotations

import os

import pytest

from heron.lora import LoRAError, confine, safe_adapter_name


@pytest.fixture
def dirs(tmp_path):
    root, outside = tmp_path / "allowed", tmp_path / "outside"
    (root / "good").mkdir(parents=True)
    (root / "good" / "adapter_config.json").write_text("{}")
    (root / "good" / "adapter_model.safetensors").write_bytes(b"x")
    outside.mkdir()
    (outside / "adapter_config.json").write_text("{}")
    (outside / "adapter_model.safetensors").write_bytes(b"secret")
    return root, outside


def test_accepts_a_subfolder_relative_or_absolute(dirs):
    root, _ = dirs
    assert confine("good", [root]) == (root / "good").resolve()
    assert confine(root / "good", [root]) == (root / "good").resolve()
    assert confine(str(root / "good"), ["/nonexistent-first", root]) == (root / "good").resolve()


def test_relative_path_is_taken_in_the_first_root(dirs, tmp_path):
    root, _ = dirs
    other = tmp_path / "other"
    other.mkdir()
    assert confine("good", [other, root]) == (other / "good").resolve()  # the path need not exist yet


@pytest.mark.parametrize("path", ["../outside", "good/../../outside", "good/..", "..", "good\\..\\..\\outside"])
def test_refuses_dotdot(dirs, path):
    root, _ = dirs
    with pytest.raises(LoRAError, match=r"'\.\.'"):
        confine(path, [root])


def test_refuses_dotdot_even_when_it_stays_inside(dirs):
    root, _ = dirs
    with pytest.raises(LoRAError, match=r"'\.\.'"):
        confine(str(root / "good" / ".." / "good"), [root])


def test_refuses_absolute_path_outside(dirs):
    root, outside = dirs
    with pytest.raises(LoRAError, match="outside the allowed directories"):
        confine(outside, [root])
    with pytest.raises(LoRAError, match="outside the allowed directories"):
        confine("/etc", [root])


def test_refuses_a_prefix_sibling(dirs, tmp_path):
    root, _ = dirs
    sibling = tmp_path / "allowed-evil"
    sibling.mkdir()
    with pytest.raises(LoRAError, match="outside"):
        confine(sibling, [root])


def test_refuses_a_directory_symlink_leading_outside(dirs):
    root, outside = dirs
    os.symlink(outside, root / "link")
    with pytest.raises(LoRAError, match="outside the allowed directories"):
        confine("link", [root])
    with pytest.raises(LoRAError, match="outside the allowed directories"):
        confine(root / "link", [root])


def test_refuses_an_adapter_file_symlink_leading_outside(dirs):
    root, outside = dirs
    folder = root / "sneaky"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    os.symlink(outside / "adapter_model.safetensors", folder / "adapter_model.safetensors")
    with pytest.raises(LoRAError, match="adapter_model.safetensors"):
        confine("sneaky", [root])


def test_accepts_a_symlink_that_stays_inside(dirs):
    root, _ = dirs
    os.symlink(root / "good", root / "alias")
    assert confine("alias", [root]) == (root / "good").resolve()


def test_refuses_without_roots(dirs):
    root, _ = dirs
    with pytest.raises(LoRAError, match="no allowed directories"):
        confine(root / "good", [])
    with pytest.raises(LoRAError, match="empty"):
        confine("", [root])


@pytest.mark.parametrize("name", ["a", "my-adapter", "v1.2_final", "A" * 128, ".hidden", "x..y"])
def test_safe_adapter_names(name):
    assert safe_adapter_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "/abs", "../x", "a b", "é", "A" * 129, "x\n", "a:b"])
def test_unsafe_adapter_names(name):
    assert not safe_adapter_name(name)
