#!/usr/bin/env bash
# Regenerate the real-world domain files in this directory with Debian 12's virt-install 4.1 and
# libvirt 9.0 (see /work/shared/tools/libvirt-peer.sh `setup`; a running libvirtd is needed).
# Not run by the tests (CI has no libvirt): its outputs are committed.
#
#   NAME.xml           virt-install --print-xml (what a user copies from virt-install)
#   NAME.dumpxml.xml   virsh define NAME.xml, then virsh dumpxml NAME (what libvirt stored)
#   NAME.args          virsh domxml-to-native qemu-argv NAME.xml (libvirt's own command line),
#   NAME.dumpxml.args  ... of NAME.dumpxml.xml; the environment prefix (LC_ALL=, PATH=, HOME=,
#                      XDG_*=) that libvirt prints before the binary is removed.
#
# UUIDs and MAC addresses are random, so a rerun changes them. Disk and ISO paths are under
# /var/lib/libvirt/images (virt-install checks that they exist): small placeholder files are
# created there when missing. The Debian 12 osinfo-db (0.20221130) knows no debian12, hence
# --os-variant debian11.
set -euo pipefail
cd "$(dirname "$0")"
URI=qemu:///system
I=/var/lib/libvirt/images
mkdir -p "$I"
for f in debian12 debian12-uefi headless win11 fedora; do
  [ -e "$I/$f.qcow2" ] || qemu-img create -q -f qcow2 "$I/$f.qcow2" 20G
done
for f in Win11_English_x64.iso Fedora-Server-dvd-x86_64-37.iso; do
  [ -e "$I/$f" ] || truncate -s 1M "$I/$f"
done

vi() { virt-install --connect "$URI" "$@"; }
vi --print-xml --name debian12 --memory 2048 --vcpus 2 --disk "$I/debian12.qcow2" --import \
   --os-variant debian11 --network network=default >debian12.xml
vi --print-xml --name debian12-uefi --memory 2048 --vcpus 2 --disk "$I/debian12-uefi.qcow2" \
   --import --os-variant debian11 --network network=default --boot uefi >debian12-uefi.xml
vi --print-xml --name headless --memory 1024 --vcpus 1 --disk "$I/headless.qcow2" --import \
   --os-variant debian11 --graphics none --network user >headless.xml
# installers: --print-xml 1 is the install step (virt-install prints two documents otherwise)
vi --print-xml 1 --name win11 --memory 4096 --vcpus 2 --disk "$I/win11.qcow2" \
   --cdrom "$I/Win11_English_x64.iso" --os-variant win11 --network network=default >win11.xml
vi --print-xml 1 --name fedora --memory 2048 --vcpus 2 --disk "$I/fedora.qcow2" \
   --cdrom "$I/Fedora-Server-dvd-x86_64-37.iso" --os-variant fedora37 \
   --network network=default >fedora.xml

for n in debian12 debian12-uefi headless win11 fedora; do
  virsh -q -c "$URI" define "$n.xml" >/dev/null
  virsh -q -c "$URI" dumpxml "$n" >"$n.dumpxml.xml"
  virsh -q -c "$URI" undefine --nvram "$n" >/dev/null
done
for f in *.xml; do
  virsh -q -c "$URI" domxml-to-native qemu-argv "$f" \
    | sed 's|^.* \(/usr/bin/qemu-system-x86_64 \)|\1|' >"${f%.xml}.args"
done
