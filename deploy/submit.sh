#!/usr/bin/env bash
# Submit `azr train` to a Ray cluster as a Ray job (the way runs are meant to be started).
#
#   deploy/submit.sh [--address URL] [--no-wait] CONFIG.yaml [section.key=value ...]
#   deploy/submit.sh [--address URL] [--no-wait] --resume RUN_DIR [CONFIG.yaml] [overrides ...]
#
#   deploy/submit.sh configs/qwen2.5-7b-coder.yaml
#   deploy/submit.sh --no-wait configs/qwen2.5-14b-coder.yaml executor.per_node=16 selfplay.steps=200
#   deploy/submit.sh --resume /mnt/azr/runs/qwen2.5-7b-coder selfplay.steps=600
#
# Run it from anywhere: it uploads the repository root (--working-dir) with
# deploy/runtime_env.yaml. Overrides go to `azr train` unchanged (e.g. executor.per_node,
# executor.slots to resize the executor pool for this run).
#
# Environment:
#   RAY_ADDRESS          dashboard URL of the cluster (default http://127.0.0.1:8265; use
#                        `ray dashboard ray_cluster.yaml` to forward it from a launcher cluster)
#   RAY_AUTH_MODE        token (default when a token is found) or disabled
#   RAY_AUTH_TOKEN       the cluster's auth token, or
#   RAY_AUTH_TOKEN_PATH  a file holding it (default ~/.ray/auth_token, which
#                        `ray get-auth-token --generate` writes)
#   AZR_RUNTIME_ENV      runtime_env YAML (default deploy/runtime_env.yaml)
#   AZR_JOB_ID           submission id (default: Ray picks one)
#   RAY                  the ray CLI to use (default: `ray` on PATH)
set -euo pipefail
# Arrays are expanded as ${a[@]+"${a[@]}"}: bash 3.2 (macOS's /bin/bash) treats an empty
# "${a[@]}" as unbound under `set -u`.

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
RUNTIME_ENV="${AZR_RUNTIME_ENV:-$REPO_ROOT/deploy/runtime_env.yaml}"
RAY_CLI="${RAY:-ray}"
WAIT_FLAG=()
RESUME=()

while [ $# -gt 0 ]; do
    case "$1" in
        --address) [ $# -ge 2 ] || usage; ADDRESS="$2"; shift 2 ;;
        --address=*) ADDRESS="${1#--address=}"; shift ;;
        --no-wait) WAIT_FLAG=(--no-wait); shift ;;
        --resume) [ $# -ge 2 ] || usage; RESUME=(--resume "$2"); shift 2 ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) echo "submit.sh: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
# A resumed run keeps its checkpoint's config unless a config is given.
CONFIG_ARGS=()
if [ ${#RESUME[@]} -gt 0 ] && { [ $# -eq 0 ] || [[ "$1" == *=* ]]; }; then
    CONFIG=""
else
    [ $# -ge 1 ] || usage
    CONFIG="$1"
    shift
fi

# Prints CONFIG's path relative to the repository root, or fails: the config travels inside
# the uploaded working dir, so it must live in the repository and not be git-ignored.
config_in_repo() {
    local config="$1" absolute relative
    case "$config" in
        /*) absolute="$config" ;;
        *) absolute="$(pwd)/$config" ;;
    esac
    if [ ! -f "$absolute" ]; then
        echo "submit.sh: config $config not found" >&2
        return 2
    fi
    absolute="$(cd "$(dirname "$absolute")" && pwd)/$(basename "$absolute")"
    case "$absolute" in
        "$REPO_ROOT"/*) relative="${absolute#"$REPO_ROOT"/}" ;;
        *) echo "submit.sh: config $config must live inside $REPO_ROOT (it is uploaded with it)" >&2
           return 2 ;;
    esac
    # Ray leaves .gitignore'd files out of the uploaded working dir: such a config would vanish.
    if command -v git >/dev/null 2>&1 \
        && git -C "$REPO_ROOT" check-ignore -q "$relative" 2>/dev/null; then
        echo "submit.sh: config $relative is git-ignored, so it would not be uploaded;" \
             "move it (e.g. to configs/)" >&2
        return 2
    fi
    echo "$relative"
}

if [ -n "$CONFIG" ]; then
    CONFIG_REL="$(config_in_repo "$CONFIG")" || exit 2
    CONFIG_ARGS=(--config "$CONFIG_REL")
fi
if [ ! -f "$RUNTIME_ENV" ]; then
    echo "submit.sh: runtime env $RUNTIME_ENV not found" >&2
    exit 2
fi

# Dashboard token auth (Ray >= 2.52). The job client sends "Authorization: Bearer <token>"
# only when RAY_AUTH_MODE=token in its own environment; it reads the token from
# RAY_AUTH_TOKEN, else RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token.
if [ "${RAY_AUTH_MODE:-}" != "disabled" ]; then
    TOKEN_FILE="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
    if [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "$TOKEN_FILE" ]; then
        export RAY_AUTH_MODE=token
    elif [ "${RAY_AUTH_MODE:-}" = "token" ]; then
        echo "submit.sh: RAY_AUTH_MODE=token but no token: set RAY_AUTH_TOKEN, or" \
             "RAY_AUTH_TOKEN_PATH, or copy the cluster's ~/.ray/auth_token here" \
             "(on the head: ray get-auth-token)" >&2
        exit 2
    else
        echo "submit.sh: no Ray auth token found; submitting without one (works only if the" \
             "cluster runs with RAY_AUTH_MODE=disabled)" >&2
        export RAY_AUTH_MODE=disabled
    fi
fi

cd "$REPO_ROOT"
SUBMISSION_ID=()
if [ -n "${AZR_JOB_ID:-}" ]; then
    SUBMISSION_ID=(--submission-id "$AZR_JOB_ID")
fi
echo "submit.sh: azr train ${RESUME[*]+${RESUME[*]}} ${CONFIG_ARGS[*]+${CONFIG_ARGS[*]}} $* -> $ADDRESS (auth: $RAY_AUTH_MODE)" >&2
exec "$RAY_CLI" job submit \
    --address "$ADDRESS" \
    --runtime-env "$RUNTIME_ENV" \
    --working-dir . \
    ${SUBMISSION_ID[@]+"${SUBMISSION_ID[@]}"} \
    ${WAIT_FLAG[@]+"${WAIT_FLAG[@]}"} \
    -- azr train ${RESUME[@]+"${RESUME[@]}"} ${CONFIG_ARGS[@]+"${CONFIG_ARGS[@]}"} "$@"
