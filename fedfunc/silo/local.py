"""Local provisioning: what onboarding does on the local backend, standing in for a silo owner.

A local silo is one account of Azurite's pool (its own random key). Provisioning claims an account,
creates the silo's containers with the silo's own key, gives the silo job a home holding only that
key plus read-only SAS URLs of the orchestrator's ``models`` and ``bundles``, and gives the orchestrator a read+list SAS on
the silo's ``outbox`` only — tied to a stored access policy, so ``release_local_silo`` revokes it.
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (AccessPolicy, BlobServiceClient, ContainerSasPermissions,
                                generate_container_sas)

from fedfunc import layout
from fedfunc.azurite import ORCHESTRATOR_ACCOUNT, Account, read_accounts
from fedfunc.registry import TABLE, SiloRecord
from fedfunc.silo.home import SiloCredentials, read_credentials, silo_home, write_credentials
from fedfunc.security.policy import POLICY_BLOB, POLICY_CONTAINER, SiloPolicy, write_policy
from fedfunc.storage import table_service

CLAIM_PARTITION = "account-claim"  # rows in the registry table, invisible to SiloRegistry.list
OUTBOX_POLICY_ID = "orchestrator-read"
SAS_LIFETIME = timedelta(days=365)


class NoFreeAccount(RuntimeError):
    pass


def _conn_parts(conn: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in conn.split(";") if "=" in p)


def claim_account(name: str, *, azurite_home: Path, orchestrator_conn: str) -> str:
    """The pool account of silo ``name``: the one it already claimed, else the first free one (atomic)."""
    table = table_service(orchestrator_conn).create_table_if_not_exists(TABLE)
    mine = list(table.query_entities("PartitionKey eq @p and silo eq @s", parameters={"p": CLAIM_PARTITION, "s": name}))
    if mine:
        return mine[0]["RowKey"]
    pool = sorted(n for n in read_accounts(azurite_home) if n != ORCHESTRATOR_ACCOUNT)
    for account in pool:
        try:
            table.create_entity({"PartitionKey": CLAIM_PARTITION, "RowKey": account, "silo": name})
            return account
        except ResourceExistsError:
            continue
    raise NoFreeAccount(f"cannot provision silo {name!r}: all {len(pool)} Azurite pool accounts are claimed")


def _read_url(orchestrator_conn: str, container: str) -> str:
    """One of the orchestrator's containers (``models``, ``bundles``): its URL with a read-only SAS."""
    client = BlobServiceClient.from_connection_string(orchestrator_conn).get_container_client(container)
    parts = _conn_parts(orchestrator_conn)
    now = datetime.now(timezone.utc)
    sas = generate_container_sas(parts["AccountName"], container, account_key=parts["AccountKey"],
                                 permission=ContainerSasPermissions(read=True),
                                 start=now - timedelta(minutes=5), expiry=now + SAS_LIFETIME)
    return f"{client.url}?{sas}"


def _outbox_read_sas(service: BlobServiceClient, account: Account) -> str:
    now = datetime.now(timezone.utc)
    outbox = service.get_container_client(layout.OUTBOX)
    outbox.set_container_access_policy({OUTBOX_POLICY_ID: AccessPolicy(
        permission=ContainerSasPermissions(read=True, list=True), start=now - timedelta(minutes=5),
        expiry=now + SAS_LIFETIME)})
    return generate_container_sas(account.name, layout.OUTBOX, account_key=account.key, policy_id=OUTBOX_POLICY_ID)


def provision_local_silo(name: str, *, azurite_home: Path, orchestrator_conn: str, home_root: Path,
                         initial_policy: SiloPolicy, compute: str = "local") -> SiloRecord:
    """Provision (or re-provision, idempotently) local silo ``name``; returns its record, status onboarding.

    ``initial_policy`` stands in for the silo owner's first policy and is written only if the silo has
    none: a policy already in the silo's storage (the owner's word) is never replaced by onboarding.
    """
    if initial_policy.silo != name:
        raise ValueError(f"initial_policy is for silo {initial_policy.silo!r}, not {name!r}")
    account = read_accounts(azurite_home)[claim_account(name, azurite_home=azurite_home,
                                                        orchestrator_conn=orchestrator_conn)]
    service = BlobServiceClient.from_connection_string(account.connection_string)
    for container in (layout.DATA, layout.OUTBOX, POLICY_CONTAINER):
        try:
            service.create_container(container)
        except ResourceExistsError:
            pass
    write_credentials(silo_home(home_root, name), SiloCredentials(
        silo=name, account=account.name, connection_string=account.connection_string,
        models_url=_read_url(orchestrator_conn, layout.MODELS),
        bundles_url=_read_url(orchestrator_conn, layout.BUNDLES)))
    policy = write_policy(account.connection_string, initial_policy, replace=False)
    return SiloRecord(name=name, account=account.name, blob_url=account.blob_url, compute=compute,
                      trusted_signers=policy.signer_ids,
                      policy_ref=f"{account.blob_url}/{POLICY_CONTAINER}/{POLICY_BLOB}",
                      outbox_read_sas=_outbox_read_sas(service, account))


def release_local_silo(name: str, *, azurite_home: Path, orchestrator_conn: str, home_root: Path) -> None:
    """Undo provisioning: revoke the outbox SAS, delete the silo's containers and home, free the account."""
    table = table_service(orchestrator_conn).create_table_if_not_exists(TABLE)
    claims = list(table.query_entities("PartitionKey eq @p and silo eq @s", parameters={"p": CLAIM_PARTITION, "s": name}))
    for claim in claims:
        service = BlobServiceClient.from_connection_string(read_accounts(azurite_home)[claim["RowKey"]].connection_string)
        for container in (layout.DATA, layout.OUTBOX, POLICY_CONTAINER):
            try:
                service.delete_container(container)
            except ResourceNotFoundError:
                pass
        table.delete_entity(CLAIM_PARTITION, claim["RowKey"])
    shutil.rmtree(silo_home(home_root, name), ignore_errors=True)


def upload_silo_data(home: Path, files: Mapping[str, bytes]) -> list[str]:
    """The silo owner uploads files into its own ``data`` container with its own key (``{task}/{part}/...``
    paths); returns the paths written."""
    container = BlobServiceClient.from_connection_string(read_credentials(home).connection_string) \
        .get_container_client(layout.DATA)
    for path, data in files.items():
        container.upload_blob(path, data, overwrite=True)
    return sorted(files)
