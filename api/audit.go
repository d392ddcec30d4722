package api

// auditRoutes are the routes of the audit feature.
func (s *Server) auditRoutes() []route {
	return nil
}
