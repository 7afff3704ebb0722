# Shortcuts for the Debian package; the scripts are the real entry points.
#   make deb         -> dist/scion-appliance_<version>_<arch>.deb (dpkg-buildpackage -us -uc -b)
#   make deb-check   -> build, lintian, install, run in lab mode, upgrade, remove and purge on this machine
#                       (root on Debian; what CI runs after pytest)
.PHONY: deb deb-check

deb:
	packaging/deb/build

deb-check:
	packaging/deb/ci-check
