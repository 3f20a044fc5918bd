package driver

// Blockers says what keeps s from being freed right now: the clients that
// have it open, the callback or jobs running, the holders of its remaining
// references. It is what TerminateSync reports at its deadline, available
// while waiting (drvctl unload shows it as progress). Empty once s is freed.
func (s *Service) Blockers() []Blocker { return s.Registry().blockers([]*Service{s}) }
