// Screens by URL: the server answers index.html for every non-API path, so deep links and refresh work.
import { createRouter, createWebHistory } from "vue-router";
import ChatScreen from "./components/ChatScreen.vue";
import HomeScreen from "./components/HomeScreen.vue";
import SettingsScreen from "./components/SettingsScreen.vue";

export const router = createRouter({
  history: createWebHistory("/"),
  routes: [
    { path: "/", name: "home", component: HomeScreen },
    { path: "/c/:id", name: "chat", component: ChatScreen, props: true },
    { path: "/settings", name: "settings", component: SettingsScreen },
    { path: "/:rest(.*)*", redirect: "/" },
  ],
});
