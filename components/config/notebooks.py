"""`trainyard:notebooks`: JupyterHub for researchers, one set of profiles per team.

    trainyard:notebooks:
      image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/trainyard-notebook:0.1.0
      auth:
        type: oidc                      # oidc | github | dummy (dev only)
        clientId: trainyard-notebooks
        clientSecretName: trainyard/prod/notebooks-oauth   # in Secrets Manager
        callbackUrl: https://notebooks.example.com/hub/oauth_callback
        authorizeUrl: https://login.example.com/oauth2/authorize
        tokenUrl: https://login.example.com/oauth2/token
        userdataUrl: https://login.example.com/oauth2/userinfo
        groupsClaim: groups             # a group named like a team gets its profiles
      gpuPool: eval-spot                # one-GPU profile
      fullNodePool: eval-spot           # optional: a whole node
      maxUsers: 20
      cullIdleMinutes: 60
      gpuCullIdleMinutes: 20
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Optional

from components.config.reader import Reader
from components.config.types import GpuPoolConfig, NotebookAuth, NotebooksConfig

AUTH_KINDS = ("oidc", "github", "dummy")
QUANTITY_CPU = re.compile(r"\d+(\.\d+)?|\d+m")
QUANTITY_MEM = re.compile(r"\d+(Ki|Mi|Gi|Ti)")


def _https(value: str) -> Optional[str]:
    return None if re.fullmatch(r"https://[^\s/]+(/\S*)?", value) else "is not an https:// URL"


def parse_notebooks(r: Reader, environment: str, pools: Optional[Sequence[GpuPoolConfig]],
                    image_check) -> NotebooksConfig:
    """`pools` None: the pools did not parse, so pool names are not checked here."""
    if not r.raw:
        r.finish()
        return NotebooksConfig()
    enabled = r.bool("enabled", True)
    image = r.str("image", check=image_check) if enabled else r.str("image", "")
    auth = _auth(r.child("auth", required=enabled), environment)
    by_name: Mapping[str, GpuPoolConfig] = {p.name: p for p in pools or ()}

    def pool_check(value: str) -> Optional[str]:
        if pools is None:
            return None
        pool = by_name.get(value)
        if pool is None:
            return f"is not a pool of this stack ({', '.join(by_name) or 'none'})"
        if not pool.ami_type.endswith("NVIDIA"):
            return "is not an NVIDIA GPU pool"
        return None

    gpu_pool = r.str("gpuPool", "", check=pool_check)
    full = r.str("fullNodePool", "", check=pool_check)
    cull = r.int("cullIdleMinutes", 60, min=10, max=24 * 60)
    gpu_cull = r.int("gpuCullIdleMinutes", 20, min=5, max=24 * 60)
    if cull is not None and gpu_cull is not None and gpu_cull > cull:
        r.error(f"{gpu_cull} is longer than cullIdleMinutes {cull}: GPU notebooks are culled "
                "sooner, not later", "gpuCullIdleMinutes")
    config = NotebooksConfig(
        enabled=enabled, image=image or "", auth=auth, gpu_pool=gpu_pool or "",
        full_node_pool=full or "", max_users=r.int("maxUsers", 10, min=1, max=1000),
        cull_idle_minutes=cull or 60, gpu_cull_idle_minutes=gpu_cull or 20,
        cpu=r.str("cpu", "2", check=lambda v: None if QUANTITY_CPU.fullmatch(v)
                  else "is not a CPU quantity (e.g. 2 or 500m)"),
        memory=r.str("memory", "8Gi", check=lambda v: None if QUANTITY_MEM.fullmatch(v)
                     else "is not a memory quantity (e.g. 8Gi)"),
        home_gib=r.int("homeGiB", 10, min=1, max=1024),
        public=r.bool("public", False))
    r.finish()
    return config


def _auth(r: Reader, environment: str) -> NotebookAuth:
    kind = r.str("type", "dummy" if not r.raw else None, choices=AUTH_KINDS)
    if kind is None:  # type missing or rejected (reported once): the other keys are not judged
        r.ignore_rest()
        r.finish()
        return NotebookAuth(kind="dummy")
    if kind == "dummy":
        if environment != "dev" and r.ok:
            r.error("dummy authentication (any name, no password) is for dev stacks only; use "
                    "oidc or github", "type")
        r.finish()
        return NotebookAuth(kind="dummy", admin_users=())
    client_id = r.str("clientId")
    secret = r.str("clientSecretName")
    callback = r.str("callbackUrl", check=_https)
    admins = r.str_list("adminUsers", ())
    if kind == "oidc":
        auth = NotebookAuth(kind=kind, client_id=client_id or "", client_secret_name=secret or "",
                            callback_url=callback or "",
                            authorize_url=r.str("authorizeUrl", check=_https) or "",
                            token_url=r.str("tokenUrl", check=_https) or "",
                            userdata_url=r.str("userdataUrl", check=_https) or "",
                            groups_claim=r.str("groupsClaim", "groups"), admin_users=admins)
    else:
        auth = NotebookAuth(kind=kind or "github", client_id=client_id or "",
                            client_secret_name=secret or "", callback_url=callback or "",
                            organization=r.str("organization") or "", admin_users=admins)
    r.finish()
    return auth
