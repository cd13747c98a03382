"""The adapter daemon: an adapter instance (+ webhook, + HTTP API) on a coordination client.

Run any number of ``hacoord k8s serve`` (one per zone, or several anywhere); they campaign for
the group's election and one acts. Every instance serves the webhook and the HTTP API, so the
API servers and operators can reach whichever is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from hacoord.adapters.k8s.adapter import K8sAdapter, election_name
from hacoord.adapters.k8s.daemon_config import K8sDaemonConfig
from hacoord.adapters.k8s.http_api import K8sHttpApi
from hacoord.adapters.k8s.install import install
from hacoord.adapters.k8s.kube import ZoneClient
from hacoord.adapters.k8s.webhook import AdmissionWebhook
from hacoord.client.client import Client

log = logging.getLogger("hacoord.k8s.daemon")


class K8sDaemon:
    """One instance: adapter candidate, webhook and HTTP API."""

    def __init__(self, client: Client, config: K8sDaemonConfig) -> None:
        self.client = client
        self.config = config
        self.adapter = K8sAdapter(
            client,
            config.group,
            instance=config.instance,
            ttl_s=config.ttl_s,
            api_fencing=config.api_fencing,
        )
        self.webhook = (
            AdmissionWebhook(client, config.group, election=election_name(config.group.name))
            if config.webhook is not None
            else None
        )
        self.http = K8sHttpApi(self.adapter, self.webhook)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve the webhook (installing it), the HTTP API, and start campaigning."""
        await self.adapter.open()
        settings = self.config.webhook
        if self.webhook is not None and settings is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(settings.cert_file, settings.key_file)
            await self.webhook.start(*settings.listen, tls)
            if settings.install:
                ca = settings.ca_file.read_bytes()
                for zone in self.config.group.zones:
                    admin = ZoneClient(zone)
                    await admin.open()
                    try:
                        await install(admin, self.config.group, settings.url, ca)
                    finally:
                        await admin.close()
        if self.config.http is not None:
            await self.http.start(*self.config.http)
        self._task = asyncio.create_task(self._run(), name="k8s-adapter")
        log.info(
            "k8s adapter %s for group %s: %d zones, %d members",
            self.config.instance,
            self.config.group.name,
            len(self.config.group.zones),
            len(self.config.group.members),
        )

    async def _run(self) -> None:
        try:
            if await self.adapter.bootstrap_if_new():
                log.info("bootstrapped group %s", self.config.group.name)
        except Exception:
            log.exception("bootstrap of group %s failed", self.config.group.name)
        await self.adapter.run()

    async def stop(self) -> None:
        """Stop campaigning (resigning), then the HTTP API and the webhook."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.http.close()
        if self.webhook is not None:
            await self.webhook.close()
        await self.adapter.close()
