"""Installs the pipeline, its components, the trainer module and the serving client.

Dependencies are pinned in requirements.lock and installed with uv (see README): tfx 1.16 declares
Requires-Python <3.11 although it runs on 3.11, which plain pip refuses.
"""

import setuptools

setuptools.setup(
    name="mnist-diffusion-tfx",
    version="0.1.0",
    description="TFX pipeline training a class-conditional diffusion model on MNIST, served by TF Serving.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["core*", "pipeline*", "components*", "trainer_module*", "serving*"]),
    package_data={"": ["*.md"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-transform==1.16.0",
        "tensorflow-serving-api==2.16.1",
        "tensorflow-datasets==4.9.10",
        "apache-beam[gcp]==2.59.0",
        "numpy==1.26.4",
        "dill",
        "pillow",
    ],
    entry_points={"console_scripts": ["mnist-diffusion=pipeline.run:main"]},
)
