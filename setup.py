"""Package discovery for the `slipway.<area>` import names.

setuptools cannot discover packages across a `package-dir` mapping by itself, so
each top-level area is walked here and its packages are renamed under `slipway.`.
Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

AREAS = {
    "contracts": "slipway.contracts",
    "libs": "slipway.libs",
    "services": "slipway.services",
    "cli": "slipway.cli",
}

packages = []
for folder, name in AREAS.items():
    packages.append(name)
    packages.extend(f"{name}.{sub}" for sub in find_packages(where=folder))

setup(
    packages=packages,
    package_data={
        "": [
            *("py.typed", "buildpacks/**/*", "*.sql", "*.html"),
            # the dashboard (services/gateway/web/static): its page, scripts, styles, images
            *("static/**/*.html", "static/**/*.js", "static/**/*.css", "static/**/*.svg"),
        ]
    },
)
