"""Hostile programs shared by the sandbox tests (test_hostile_programs) and the evaluation
tests (test_eval_sandbox: the same programs as HumanEval completions). Each defines ``f``."""

from __future__ import annotations

from pathlib import Path

INFINITE_LOOP = "def f(x):\n    while True:\n        pass"
MEMORY_BOMB = "def f(x):\n    return [0] * (10 ** 10)"
FORK_BOMB = (
    "import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n"
    "        except OSError:\n            pass"
)
HARD_EXIT = "import os\ndef f(x):\n    os._exit(0)"
"""Leaves without an exception or a result (``crash:exit0``)."""


def escape_programs(host_path: Path) -> dict[str, str]:
    """Programs that try to create ``host_path`` on the host, past the static checks."""
    target = repr(str(host_path))
    return {
        "__import__ with built strings": (
            f"def f(x):\n    m = __import__('o' + 's')\n"
            f"    fd = m.open({target}, m.O_WRONLY | m.O_CREAT)\n    m.write(fd, b'x')\n    return 1"
        ),
        "__subclasses__ walk to os.system": (
            "def f(x):\n    for c in ().__class__.__base__.__subclasses__():\n"
            "        if c.__name__ == '_wrap_close':\n"
            f"            return c.__init__.__globals__['system']('touch ' + {target})\n    return -1"
        ),
        "getattr on __globals__ to builtins.open": (
            "def f(x):\n    b = getattr(f, '__glo' + 'bals__')['__builtins__']\n"
            "    o = b['open'] if isinstance(b, dict) else getattr(b, 'open')\n"
            f"    o({target}, 'w').write('x')\n    return 1"
        ),
    }
