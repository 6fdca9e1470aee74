"""`course.py lab` opens JupyterLab with the course's own defaults, below the learner's settings."""
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _course():
    spec = importlib.util.spec_from_file_location("course_script", ROOT / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lab_keeps_the_callers_config_path_and_adds_the_courses():
    env = _course().lab_environment({"JUPYTER_CONFIG_PATH": "/somewhere/else"})
    assert env["JUPYTER_CONFIG_PATH"].split(":") == [str(ROOT / "jupyter-config"), "/somewhere/else"]


def test_jupyterlab_reads_the_news_prompt_as_answered_no(tmp_path):
    # Ask JupyterLab's own settings machinery, in a fresh process with the lab's environment and an
    # empty user config, what the notification plugin's defaults are.
    env = _course().lab_environment({"JUPYTER_CONFIG_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    probe = ("from jupyter_server.services.config.manager import ConfigManager\n"
             "print(ConfigManager(config_dir_name='labconfig').get('default_setting_overrides')"
             ".get('@jupyterlab/apputils-extension:notification'))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert "'fetchNews': 'false'" in out.stdout, out.stdout + out.stderr
