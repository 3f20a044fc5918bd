package sg

import (
	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

// OpenerKey is the resource that opens /dev/sgN nodes: SG_IO on the node on
// real hardware, the simulated disk on a simulated bus.
var OpenerKey = drivertable.NewKey[Opener]("sg")

// MatchKeys are the keys of a custom personality of a driver of SCSIDevice
// nubs: the INQUIRY fields the hotplug bridge publishes, as sysfs shows
// them.
var MatchKeys = []drivertable.MatchKey{
	drivertable.IntKey("type", PropType, 0, 31, "peripheral device type (0 disk, 5 CD/DVD)"),
	drivertable.StringKey("vendor", "vendor", "INQUIRY vendor"),
	drivertable.StringKey("model", "model", "INQUIRY product"),
	drivertable.StringKey("rev", "revision", "INQUIRY revision"),
}

// Entry is sg's entry in the driver table. Every personality of it, custom
// ones included, requires an sg node on the nub; the default one matches
// disks and CD/DVD drives.
var Entry = drivertable.Entry{
	Name:      Name,
	Summary:   "SCSI disks and CD/DVD drives through their /dev/sgN node (SG_IO)",
	Needs:     []string{OpenerKey.Name()},
	MatchKeys: MatchKeys,
	Require:   []driver.Match{driver.MatchFunc(hasNode)},
	Personalities: func(r *drivertable.Resources) ([]driver.Personality, error) {
		open, err := OpenerKey.From(r)
		if err != nil {
			return nil, err
		}
		p := Personality(open)
		p.Match = []driver.Match{driver.MatchFunc(diskOrCD)}
		return []driver.Personality{p}, nil
	},
}
