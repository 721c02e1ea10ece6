"""Errors map one to one: one canopy.Error subclass per C++ ErrorKind, with the
C++ message unchanged."""

import pytest

import canopy
from canopy import _canopy
from canopy._errors import ERROR_CLASSES


def test_one_class_per_kind():
    assert set(ERROR_CLASSES) == set(canopy.ErrorKind)
    assert len(set(ERROR_CLASSES.values())) == len(canopy.ErrorKind)
    for kind, cls in ERROR_CLASSES.items():
        assert cls.kind == kind
        assert issubclass(cls, canopy.Error)
        assert getattr(canopy, cls.__name__) is cls
        assert _canopy._error_class_name(kind) == cls.__name__


@pytest.mark.parametrize("kind", list(canopy.ErrorKind), ids=lambda k: k.name)
def test_cpp_errors_reach_python_unchanged(kind):
    message = f"request 3: page id 77 at table position 1 is out of range [0, 8) ({kind.name}) é"
    with pytest.raises(canopy.Error) as info:
        _canopy._raise_error(kind, message)
    assert type(info.value) is ERROR_CLASSES[kind]
    assert info.value.kind == kind
    assert str(info.value) == message
    assert info.value.message == message


def test_invalid_argument_is_a_value_error():
    with pytest.raises(ValueError):
        canopy.AttentionSpec(head_dim=128, num_qo_heads=3, num_kv_heads=2)


def test_no_gpu_says_so():
    if canopy.gpu_available():
        pytest.skip("a GPU is available: the no-GPU message cannot be shown")
    reason = canopy.gpu_unavailable_reason()
    assert reason
    with pytest.raises(canopy.NoDeviceError) as info:
        canopy.device_info()
    assert "no GPU was found" in str(info.value)
    assert reason in str(info.value)
    assert info.value.kind == canopy.ErrorKind.NO_DEVICE


def test_tuning_search_path_needs_no_gpu(tmp_path):
    path = canopy.tuning_search_path(str(tmp_path))
    assert path[0] == str(tmp_path)
    assert all(isinstance(p, str) for p in path)
