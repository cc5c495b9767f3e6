"""Map the source rooms onto the c4 namespace: agent/ -> c4.agent, and so on."""

from setuptools import find_namespace_packages, setup

ROOMS = {
    "c4": "c4",
    "c4.agent": "agent",
    "c4.collector": "collector",
    "c4.analytics": "analytics",
    "c4.traffic": "traffic",
    "c4.ui": "ui",
    "c4.sim": "sim",
    "c4.bench": "bench",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for package, folder in ROOMS.items():
    package_dir[package] = folder
    packages.append(package)
    # namespace discovery, so data folders such as c4/catalogue/tables ship too
    for sub in find_namespace_packages(folder, exclude=["*__pycache__*"]):
        packages.append(f"{package}.{sub}")
        package_dir[f"{package}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
