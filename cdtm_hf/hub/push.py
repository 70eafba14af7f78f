"""Pushing a CDTM checkpoint to the Hugging Face Hub: repo-id and token checks, the pre-flight check, the push.

What goes up is decided by `cdtm_hf.hub.checkpoint` (a complete, pickle-free folder and the exact files to upload);
the model card by `cdtm_hf.hub.cards`. This module only talks to the Hub; its command line is `cdtm-hub`
(`cdtm_hf.cli.hub`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..paper.recipes import paper_reference_for
from .cards import load_report, write_model_card
from .checkpoint import CARD_NAME, IGNORE_PATTERNS, checkpoint_files, validate_checkpoint

__all__ = [
    "HubUnreachableError",
    "InvalidRepoIdError",
    "MissingTokenError",
    "check_push_ready",
    "push_checkpoint",
]

#: seconds the pre-flight check waits for the Hub to answer
HUB_TIMEOUT_S = 10.0


class InvalidRepoIdError(ValueError):
    """The Hub repository id breaks one of the Hub's naming rules."""


class MissingTokenError(RuntimeError):
    """No Hugging Face token: nothing can be pushed."""


class HubUnreachableError(RuntimeError):
    """The Hub did not answer, or refused the token, before anything was trained or uploaded."""


# ---------------------------------------------------------------------------------------------------------------
# Repo id and token
def _broken_rule(repo_id: Any) -> str:
    if not isinstance(repo_id, str):
        return f"it must be a string, not {type(repo_id).__name__}"
    if repo_id.count("/") > 1:
        return "it has more than one '/': use 'name' or 'namespace/name'"
    if "--" in repo_id or ".." in repo_id:
        return "it contains '--' or '..', which the Hub forbids"
    if repo_id.endswith(".git"):
        return "it ends with '.git'"
    name = repo_id.split("/")[-1]
    if len(name) > 96:
        return f"the name is {len(name)} characters long; the maximum is 96"
    bad = sorted({c for c in repo_id if not (c.isalnum() or c in "-_./")})
    if bad:
        return f"it contains the character(s) {' '.join(repr(c) for c in bad)}; only letters, digits, '-', '_' and '.'"
    if any(part[:1] in "-." or part[-1:] in "-." for part in repo_id.split("/")):
        return "a part starts or ends with '-' or '.'"
    if any(not part for part in repo_id.split("/")):
        return "the namespace or the name is empty"
    return "it breaks the Hub's naming rules"


def _check_repo_id(repo_id: Any) -> None:
    if not isinstance(repo_id, str) or not repo_id:
        raise InvalidRepoIdError(
            f"invalid Hub repo id {repo_id!r}: it must be a non-empty 'namespace/name' string (--hub_model_id)"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise InvalidRepoIdError(f"invalid Hub repo id {repo_id!r}: {_broken_rule(repo_id)} ({err})") from err


def _resolve_token(repo_id: str, token: str | None, tail: str) -> str:
    token = token or get_token()
    if not token:
        raise MissingTokenError(
            f"no Hugging Face token found, so {repo_id!r} cannot be pushed: log in with `hf auth login`, or set the "
            f"HF_TOKEN environment variable, or pass token=... (--token). {tail}"
        )
    return token


def _whoami(token: str, timeout: float) -> dict[str, Any]:
    """`HfApi(token=token).whoami()`, given up after `timeout` seconds (the Hub client sets no timeout of its own)."""
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["answer"] = HfApi(token=token).whoami()
        except Exception as err:  # noqa: BLE001 - handed to the caller below
            result["error"] = err

    thread = threading.Thread(target=call, name="cdtm-hub-whoami", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" in result:
        raise result["error"]
    if "answer" not in result:
        raise TimeoutError(f"no answer within {timeout:g} s")
    return result["answer"]


def check_push_ready(repo_id: str, token: str | None = None) -> str:
    """Fail fast, before a long training run, if a push to `repo_id` cannot succeed; return the token.

    Checks the repo id, that a token is available, and that the Hub answers and accepts the token (one `whoami`
    call, given up after `HUB_TIMEOUT_S` seconds).

    Args:
        repo_id (`str`): the target repository, `namespace/name`.
        token (`str`, *optional*): a Hub token; defaults to the one `hf auth login` stored, or `HF_TOKEN`.

    Raises:
        `InvalidRepoIdError`: the repo id breaks a Hub naming rule (named in the message).
        `MissingTokenError`: no token was found.
        `HubUnreachableError`: the Hub did not answer (offline mode, no network, timeout) or refused the token; the
            message names the repo, the endpoint and the remedy.
    """
    _check_repo_id(repo_id)
    token = _resolve_token(repo_id, token, "Nothing was trained or uploaded yet.")
    endpoint = constants.ENDPOINT
    remedy = (
        "Nothing was trained or uploaded yet. Fix the connection or the token, or drop --push_to_hub and push the "
        f"finished run later with `cdtm-hub push OUTPUT_DIR {repo_id}`."
    )
    try:
        answer = _whoami(token, HUB_TIMEOUT_S)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        what = "rejected the token" if status in (401, 403) else f"answered with an error (HTTP {status})"
        raise HubUnreachableError(f"cannot push to {repo_id!r}: the Hub at {endpoint} {what}: {err}. {remedy}") from err
    except Exception as err:  # noqa: BLE001 - offline mode, DNS, connection, timeout: all mean "cannot push"
        raise HubUnreachableError(
            f"cannot push to {repo_id!r}: the Hub at {endpoint} did not answer ({type(err).__name__}: {err}). {remedy}"
        ) from err
    role = ((answer.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubUnreachableError(
            f"cannot push to {repo_id!r}: the token of {answer.get('name', 'this user')} at {endpoint} is read-only. "
            f"Create a token with write access (https://huggingface.co/settings/tokens). {remedy}"
        )
    return token


# ---------------------------------------------------------------------------------------------------------------
# Push
def push_checkpoint(
    output_dir: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    create_card: bool = True,
    revision: str | None = None,
) -> str:
    """Upload a checkpoint folder to the Hub; return the repository URL.

    Everything is checked before anything is written or sent: the repo id, the folder (`validate_checkpoint`) and
    the token. Then `README.md` is written if missing (`create_card`), the repository is created if needed, and
    exactly the files of `checkpoint_files` go up in one commit.

    Args:
        output_dir (`str` or `Path`): the checkpoint folder (a run's `--output_dir`).
        repo_id (`str`): the target repository, `namespace/name`.
        token (`str`, *optional*): a Hub token; defaults to the one `hf auth login` stored, or `HF_TOKEN`.
        private (`bool`, *optional*, defaults to `False`): create the repository as private.
        commit_message (`str`, *optional*): the commit message.
        create_card (`bool`, *optional*, defaults to `True`): write the model card when `README.md` is missing.
        revision (`str`, *optional*): the branch to push to (created from main if missing); default the main branch.

    Raises:
        `InvalidRepoIdError`, `CheckpointError`, `MissingTokenError`: before anything is written or uploaded.
    """
    output_dir = Path(output_dir)
    _check_repo_id(repo_id)
    validate_checkpoint(output_dir)
    token = _resolve_token(repo_id, token, f"Nothing was uploaded and {output_dir} was left unchanged.")
    if create_card and not (output_dir / CARD_NAME).is_file():
        report = load_report(output_dir, None)
        write_model_card(output_dir, report, repo_id=repo_id, paper_reference=paper_reference_for(report))
    files = checkpoint_files(output_dir)
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, exist_ok=True, private=private)
    except HfHubHTTPError:  # the Hub answered: its own message says why
        raise
    except (OfflineModeIsEnabled, OSError, TimeoutError) as err:  # issue 17: offline or unreachable: one clear line
        raise HubUnreachableError(
            f"cannot push {output_dir} to {repo_id!r}: the Hub at {constants.ENDPOINT} cannot be reached "
            f"({type(err).__name__}: {err}); nothing was uploaded. Unset HF_HUB_OFFLINE / fix the connection and "
            "push again"
        ) from None
    target = getattr(repo_url, "repo_id", None) or repo_id
    if revision:  # `--hub_revision` (issue 18): upload_folder needs the branch to exist
        api.create_branch(target, branch=revision, exist_ok=True)
    api.upload_folder(
        folder_path=str(output_dir),
        repo_id=target,
        revision=revision,
        allow_patterns=list(files),
        ignore_patterns=list(IGNORE_PATTERNS),
        commit_message=commit_message or f"Upload CDTM checkpoint ({len(files)} files)",
    )
    url = getattr(repo_url, "url", None) or str(repo_url)
    return url if isinstance(url, str) and url.startswith("http") else f"{constants.ENDPOINT}/{target}"
