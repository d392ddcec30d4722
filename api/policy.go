package api

// policyRoutes are the routes of the policy feature.
func (s *Server) policyRoutes() []route {
	return nil
}
