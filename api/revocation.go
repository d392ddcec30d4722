package api

// revocationRoutes are the routes of the revocation feature.
func (s *Server) revocationRoutes() []route {
	return nil
}
