"""The executor pool: static checks, the sandbox (fork-server, process and docker backends),
validate/score semantics (``executor.SandboxExecutor``) and the Ray actors that host them."""
