"""Topic names: one place that knows how ``<prefix>/<device>/...`` is spelled.

=========================================  ========  ===========================================
topic                                      retained  payload
=========================================  ========  ===========================================
``<prefix>/<device>/state``                yes       JSON ``state`` message
``<prefix>/<device>/event/<type>``         no        JSON event message, ``type`` == ``<type>``
``<prefix>/<device>/availability``         yes       ``online`` / ``offline`` (Last Will)
``<prefix>/<device>/command``              (sub)     JSON command or a bare word
``<discovery>/<component>/<device>/<object>/config``  yes  Home Assistant discovery
=========================================  ========  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass

from duplex.config import MQTTConfig


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one device; built from an (already validated) :class:`MQTTConfig`."""

    prefix: str
    device: str
    discovery_prefix: str = "homeassistant"

    @classmethod
    def from_config(cls, cfg: MQTTConfig) -> Topics:
        return cls(cfg.prefix, cfg.device_id, cfg.discovery_prefix)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def command(self) -> str:
        return f"{self.base}/command"

    def event(self, type_: str) -> str:
        return f"{self.base}/event/{type_}"

    @property
    def all(self) -> str:
        """Filter for everything this device publishes (what ``duplex mqtt tail`` shows)."""
        return f"{self.base}/#"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth/last-will topic: ``online`` means "send discovery again"."""
        return f"{self.discovery_prefix}/status"

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.device}/{object_id}/config"
