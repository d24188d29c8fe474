"""Settings sections of applications: an application's own typed settings, read like the platform's.

An application subclasses :class:`AppSettings` with its fields (units in the names, a description each) and
a ``yaml_section`` name. Its values come, highest first, from keyword arguments, ``MEETINGTASKS_<FIELD>``
environment variables, the YAML file named by ``MEETINGTASKS_CONFIG`` (its section, or flat names at the top
level), and defaults: the same sources as :class:`~meetingtasks.core.settings.Settings`, which keeps only the
platform's own fields. Code reads a section through its platform, ``platform.section(MeetingSettings)``, built
once per platform (tests replace it with :meth:`Platform.use_section`).

The meeting system's section is :class:`meetingtasks.services.settings.MeetingSettings`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.settings import APP_SETTINGS_NAMES, CONFIG_ENV, ENV_PREFIX, read_config_file, settings_error_line

S = TypeVar("S", bound="AppSettings")


class _YamlSection(PydanticBaseSettingsSource):
    """The section's values in the YAML file: its own ``yaml_section`` mapping, else flat top-level names."""

    def __init__(self, settings_cls: type[AppSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self.section = settings_cls.yaml_section
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        if not self.path:
            return {}
        doc = read_config_file(self.path)
        if not isinstance(doc, dict):
            return {}  # the platform's Settings reports a file that is not a mapping
        fields = self.settings_cls.model_fields
        values = {key: value for key, value in doc.items() if key in fields}
        body = doc.get(self.section)
        if body is not None and not isinstance(body, dict):
            raise ConfigurationError(f"{self.path}: section {self.section!r} must be a mapping")
        values.update(body or {})
        return values


class AppSettings(BaseSettings):
    """Base of an application's settings section (see the module docstring)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    #: The YAML file's section holding these settings.
    yaml_section: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.yaml_section:
            APP_SETTINGS_NAMES.add(cls.yaml_section)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        APP_SETTINGS_NAMES.update(cls.model_fields)  # flat names at the YAML file's top level are accepted

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert issubclass(settings_cls, AppSettings)
        return (init_settings, env_settings, _YamlSection(settings_cls, os.environ.get(CONFIG_ENV)))

    @classmethod
    def load(cls: type[S], **overrides: Any) -> S:
        """Build the section, turning a validation failure into a one-line :class:`ConfigurationError`."""
        try:
            return cls(**overrides)
        except (ValidationError, SettingsError) as exc:
            raise ConfigurationError(settings_error_line(cls, exc)) from None
