"""amp=auto picks bf16 only where the hardware runs it natively; the detection is mocked."""

import logging

import pytest
import torch

from camexp.errors import UserError
from camexp.precision import choose_amp, cpu_flags, cpu_native_bf16

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # a device object only: nothing runs on it here
ZEN3 = {"fpu", "sse2", "avx", "avx2", "fma"}  # AVX2 only, as the slow machine reports
ZEN4 = ZEN3 | {"avx512f", "avx512bw", "avx512_bf16"}
SAPPHIRE = ZEN3 | {"avx512f", "amx_bf16", "amx_tile"}


def test_cpuinfo_flags_are_parsed(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n"
    )
    assert cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "absent")) == set()


@pytest.mark.parametrize(
    ("flags", "native"),
    [(ZEN3, []), (ZEN4, ["avx512_bf16"]), (SAPPHIRE, ["amx_bf16"]), ({"avx512f"}, [])],
)
def test_native_bf16_needs_avx512_bf16_or_amx(flags, native):
    assert cpu_native_bf16(flags) == native


def test_auto_is_fp32_on_an_avx2_cpu():
    dtype, reason = choose_amp("auto", CPU, flags=ZEN3)
    assert dtype is None
    assert "no AVX512-BF16 or AMX" in reason


@pytest.mark.parametrize("flags", [ZEN4, SAPPHIRE])
def test_auto_is_bf16_on_a_cpu_with_native_bf16(flags):
    dtype, reason = choose_amp("auto", CPU, flags=flags)
    assert dtype == torch.bfloat16
    assert "native bf16" in reason


def test_explicit_bf16_on_an_avx2_cpu_warns_but_obeys(caplog):
    with caplog.at_level(logging.WARNING, logger="camexp.precision"):
        dtype, _ = choose_amp("bf16", CPU, flags=ZEN3)
    assert dtype == torch.bfloat16
    assert "4-7x slower" in caplog.text


def test_explicit_bf16_on_a_native_cpu_does_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="camexp.precision"):
        assert choose_amp("bf16", CPU, flags=ZEN4)[0] == torch.bfloat16
    assert caplog.text == ""


def test_none_is_fp32_everywhere():
    assert choose_amp("none", CPU, flags=ZEN4)[0] is None
    assert choose_amp("none", CUDA, flags=ZEN4)[0] is None


@pytest.mark.parametrize(("supported", "expected"), [(True, torch.bfloat16), (False, None)])
def test_auto_on_cuda_follows_bf16_support(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    assert choose_amp("auto", CUDA, flags=ZEN3)[0] == expected


def test_bf16_on_a_cuda_gpu_without_it_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UserError, match="amp=bf16"):
        choose_amp("bf16", CUDA)


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserError, match="amp='fp16' is not an option"):
        choose_amp("fp16", CPU, flags=ZEN4)


def test_the_build_step_logs_its_choice(monkeypatch, caplog):
    from camexp import precision
    from camexp.training.setup import amp_dtype

    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: set(ZEN3))
    with caplog.at_level(logging.INFO):
        assert amp_dtype("auto", CPU) is None
    assert "precision: fp32 (amp=auto: the CPU has no AVX512-BF16" in caplog.text
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: set(ZEN4))
    assert amp_dtype("auto", CPU) == torch.bfloat16
