"""Shell completion generated from the parser: every command and option completes."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from bulkretry._cli.completion import completion_script
from bulkretry._cli.main import build_parser, main


def complete_in_bash(script: str, *words: str) -> list[str]:
    """Run the bash completion function on ``words`` (the last one being completed)."""
    program = (
        f"{script}\n"
        f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}\n"
        "_bulkretry; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_and_each_commands_own_options() -> None:
    """`bulkretry r<TAB>` offers run and report; `run --ra<TAB>` offers --rate."""
    script = completion_script(build_parser({}), "bash")
    assert complete_in_bash(script, "bulkretry", "r") == ["run", "report"]
    assert complete_in_bash(script, "bulkretry", "run", "--ra") == ["--rate"]
    assert "--flow-id" in complete_in_bash(script, "bulkretry", "list-failed", "--f")
    assert "--summary-json" in complete_in_bash(script, "bulkretry", "run", "--s")


def test_zsh_loads_the_bash_completion_through_bashcompinit() -> None:
    """zsh gets the same function, behind bashcompinit."""
    script = completion_script(build_parser({}), "zsh")
    assert script.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    assert "complete -o filenames -F _bulkretry bulkretry" in script


def test_fish_has_a_line_per_command_and_option_with_its_help() -> None:
    """Each fish line is a complete command for bulkretry, options scoped to their command."""
    script = completion_script(build_parser({}), "fish")
    lines = script.splitlines()
    assert all(line.startswith("complete -c bulkretry") for line in lines)
    assert any("__fish_use_subcommand -a report" in line for line in lines)
    rate = [line for line in lines if "-l rate" in line and "from run'" in line]
    assert len(rate) == 1
    assert "-r -F" in rate[0]


def test_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`bulkretry completion tcsh` is exit 2 with one line."""
    with pytest.raises(SystemExit) as stopped:
        main(["completion", "tcsh"], env={})
    assert stopped.value.code == 2
    assert "tcsh" in capsys.readouterr().err
