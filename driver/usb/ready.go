package usb

import "context"

// ClaimReadier is implemented by a backend wrapper that must ready an
// interface before anyone claims it: the USB hold (package
// hotplug/usbhold) authorizes an interface it kept from the kernel's
// drivers, without which usbfs refuses the claim. The wrapper readies the
// claims made through its own devices itself; [ReadyClaim] is for a claim
// made beside the backend, on a usbfs descriptor of the caller's (package
// devgrant claims the interface it hands to a driver process that way).
type ClaimReadier interface {
	// ReadyClaim readies interface iface of the device at bus/addr. An
	// interface the wrapper has nothing to do for, or a device gone
	// meanwhile, is no error: the claim that follows says ErrNoDevice.
	ReadyClaim(ctx context.Context, bus, addr, iface int) error
}

// Unwrapper is a backend wrapped around another (the detach journal's,
// the USB hold's): Unwrap returns the wrapped backend.
type Unwrapper interface {
	Unwrap() Backend
}

// ReadyClaim asks every ClaimReadier among b and the backends it wraps
// (Unwrapper), outermost first, to ready interface iface of the device at
// bus/addr for a claim made beside b. The first error stops it.
func ReadyClaim(ctx context.Context, b Backend, bus, addr, iface int) error {
	for b != nil {
		if r, ok := b.(ClaimReadier); ok {
			if err := r.ReadyClaim(ctx, bus, addr, iface); err != nil {
				return err
			}
		}
		u, ok := b.(Unwrapper)
		if !ok {
			return nil
		}
		b = u.Unwrap()
	}
	return nil
}

// Innermost returns the backend at the bottom of b's wrappers
// (Unwrapper): the one that talks to the devices.
func Innermost(b Backend) Backend {
	for {
		u, ok := b.(Unwrapper)
		if !ok {
			return b
		}
		b = u.Unwrap()
	}
}
