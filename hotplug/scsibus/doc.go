// Package scsibus is the hotplug bus adapter for SCSI: a scsi_device
// uevent (a LUN) becomes a SCSIDevice nub with its peripheral type, INQUIRY
// strings, H:C:T:L and sg node, under the nearest published ancestor (the
// USB interface of a stick; the registry root for a virtio or SAS disk).
//
// A LUN's sg node is a companion: the LUN is published when the node's
// add arrives (or at once if sysfs already has it), or without a node when
// the LUN's driver bound and no node came (the sg driver is not loaded).
//
// The adapter is a hotplug.Bus: the bridge calls Match for every uevent of
// the scsi and scsi_generic subsystems and Describe for the LUNs; the sg
// driver (driver/scsi/sg) opens a nub's PropSG node.
package scsibus
