"""The builder: source tarballs to runnable images, by Heroku buildpacks or a Dockerfile."""
