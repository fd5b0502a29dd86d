"""Notification channels behind one plugin interface: `Channel.send(message)`; see base.py."""

from __future__ import annotations

from alert_bridge.channels.base import Channel, DeliveryError, Message, render_message
from alert_bridge.channels.email import EmailChannel
from alert_bridge.channels.grafana import GrafanaChannel
from alert_bridge.channels.sms import SmsChannel
from alert_bridge.channels.webhook import WebhookChannel
from alert_bridge.config import ChannelConfig

# A plugin channel type adds its Channel subclass here (and its config parser in config._CHANNEL_PARSERS).
REGISTRY: dict[str, type[Channel]] = {
    "email": EmailChannel,
    "webhook": WebhookChannel,
    "sms": SmsChannel,
    "grafana": GrafanaChannel,
}


def build_channels(configs: dict[str, ChannelConfig]) -> dict[str, Channel]:
    """One channel object per configured channel name."""
    return {name: REGISTRY[cfg.type](cfg) for name, cfg in configs.items()}


__all__ = ["REGISTRY", "Channel", "DeliveryError", "Message", "build_channels", "render_message"]
