"""The ``conf/`` folders of installed deeprun plugins (entry point group ``deeprun.plugins``) on Hydra's
config search path, after deeprun's own: their YAMLs are options like deeprun's (``activation=my_act``)."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from deeprun.plugins import config_dirs


class DeeprunPluginConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for folder in config_dirs():
            search_path.append(provider="deeprun-plugin", path=f"file://{folder}")
