"""The API app's state as typed ``AppKey``s (set by ``app.create_app``, read by handlers)."""

from __future__ import annotations

from aiohttp import web

from services.api.adapters.views import PostgresViews
from services.api.domain.providers import DriverAbilities
from services.api.domain.usecases import LoadBalancing
from services.api.settings import ApiSettings

SETTINGS = web.AppKey("api_settings", ApiSettings)
# What the deployment's amphora driver can honour (from the settings, made once).
ABILITIES = web.AppKey("api_driver_abilities", DriverAbilities)
VIEWS = web.AppKey("api_views", PostgresViews)
USECASES = web.AppKey("api_usecases", LoadBalancing)
